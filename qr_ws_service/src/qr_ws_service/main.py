from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from common.app import build_app
from common.boundary import service_headers
from common.health import Readiness
from common.logs import configure_logging
from qr_ws_service.auth_client import AuthClient
from qr_ws_service.dependencies import State
from qr_ws_service.hubs import HubRegistry
from qr_ws_service.logs import redact_client_ids
from qr_ws_service.routes import internal_router, router
from qr_ws_service.settings import QrWsSettings


def create_app(settings: QrWsSettings | None = None) -> FastAPI:
    settings = settings or QrWsSettings()
    configure_logging("qr_ws", settings.log_level, settings.log_format)
    redact_client_ids()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        timeout = httpx.Timeout(settings.auth_timeout_seconds)
        async with httpx.AsyncClient(
            base_url=settings.auth_service_url,
            timeout=timeout,
            headers=service_headers(settings.service_secret_value()),
        ) as auth_http:
            yield {
                "settings": settings,
                "hubs": HubRegistry(ttl=settings.hub_ttl, max_hubs=settings.max_hubs),
                "auth": AuthClient(auth_http),
                # No database and no Redis: hubs live in memory; ready whenever it serves.
                "readiness": Readiness(),
            }

    app = build_app(
        title="QR login websocket service",
        prefix="/auth_events",
        description="Websocket hubs that carry a QR-login ticket from a phone to a browser.",
        lifespan=lifespan,
        settings=settings,
        routers=[router, internal_router],
    )
    return app
