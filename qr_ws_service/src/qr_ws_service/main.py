from fastapi import FastAPI

from common.app import build_app
from common.logs import configure_logging
from qr_ws_service.settings import QrWsSettings


def create_app(settings: QrWsSettings | None = None) -> FastAPI:
    settings = settings or QrWsSettings()
    configure_logging("qr_ws", settings.log_level, settings.log_format)
    app = build_app(
        title="QR login websocket service",
        prefix="/auth_events",
        description="Websocket hubs that carry a QR-login ticket from a phone to a browser.",
    )
    app.state.settings = settings
    return app
