"""What routes reach from the lifespan state (see common.state)."""

from typing import Annotated, TypedDict

from fastapi import Depends

from common.access import AccessCheck
from common.health import Readiness
from common.state import from_state


class State(TypedDict):
    readiness: Readiness
    access: AccessCheck


AccessDep = Annotated[AccessCheck, Depends(from_state("access", AccessCheck))]
