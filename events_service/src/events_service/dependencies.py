"""What routes reach from the lifespan state (see common.state)."""

from typing import Annotated, TypedDict

from fastapi import Depends

from common.health import Readiness
from common.state import from_state
from events_service.gateway import Gateway
from events_service.hub import Hub


class State(TypedDict):
    readiness: Readiness
    gateway: Gateway
    hub: Hub


GatewayDep = Annotated[Gateway, Depends(from_state("gateway", Gateway))]
HubDep = Annotated[Hub, Depends(from_state("hub", Hub))]
