"""What routes reach from the lifespan state (see common.state)."""

from typing import Annotated, TypedDict

from fastapi import Depends

from common.health import Readiness
from common.state import from_state
from qr_ws_service.auth_client import AuthClient
from qr_ws_service.hubs import HubRegistry
from qr_ws_service.settings import QrWsSettings


class State(TypedDict):
    readiness: Readiness
    settings: QrWsSettings
    hubs: HubRegistry
    auth: AuthClient


SettingsDep = Annotated[QrWsSettings, Depends(from_state("settings", QrWsSettings))]
HubsDep = Annotated[HubRegistry, Depends(from_state("hubs", HubRegistry))]
AuthDep = Annotated[AuthClient, Depends(from_state("auth", AuthClient))]
