from typing import Any

from fastapi import APIRouter, WebSocket

from common.errors import UpgradeRequired
from events_service.dependencies import GatewayDep, HubDep

router = APIRouter(tags=["events"])
# Not routed by nginx: tests and operators ask each instance directly.
internal_router = APIRouter(prefix="/internal", include_in_schema=False)


@router.websocket("/events/")
@router.websocket("/events")
async def events(websocket: WebSocket, gateway: GatewayDep) -> None:
    """The event gateway (API.md 20): HELLO, then IDENTIFY or RESUME, then dispatches."""
    await gateway.serve(websocket)


@router.get("/events/", include_in_schema=False)
@router.get("/events", include_in_schema=False)
async def events_over_http() -> None:
    """A plain GET of the gateway's address (a browser, a client that forgot the upgrade): 426."""
    raise UpgradeRequired()


@internal_router.get("/stats")
async def stats(hub: HubDep) -> dict[str, Any]:
    """This instance's connections, sessions and queues (what a leak would show)."""
    return hub.stats()
