"""What routes reach from the lifespan state (see common.state)."""

from typing import Annotated, TypedDict

from fastapi import Depends

from common.health import Readiness
from common.state import from_state
from private_chat_service.limits import ChatLimits
from private_chat_service.service import PrivateChatService


class State(TypedDict):
    readiness: Readiness
    service: PrivateChatService
    limits: ChatLimits


ServiceDep = Annotated[PrivateChatService, Depends(from_state("service", PrivateChatService))]
