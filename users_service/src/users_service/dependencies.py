"""What routes reach from the lifespan state (see common.state)."""

from typing import Annotated, TypedDict

from fastapi import Depends

from common.health import Readiness
from common.state import from_state
from users_service.service import UsersService


class State(TypedDict):
    readiness: Readiness
    service: UsersService


ServiceDep = Annotated[UsersService, Depends(from_state("service", UsersService))]
