"""The trust boundary, enforced by every service: its public routes answer only nginx, its
/internal/ routes only the other services. nginx adds `X-Edge-Token` (the edge secret) to every
request it proxies; a service calling another adds `X-Service-Token` (the service secret). Any
other caller, such as a local process connecting to a service's port, gets 403 before a route
runs, so a client-chosen `X-User-Id` reaches nothing. Probes and metrics stay open: they carry no
user's data, and the supervisor and Prometheus read them.

A secret that is not configured turns its check off (a service built in a unit test); settings
refuse to start without both in production, and devstack and docker-compose always give them."""

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from common.errors import UntrustedCaller
from common.i18n import pick_language

EDGE_HEADER = "X-Edge-Token"
SERVICE_HEADER = "X-Service-Token"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
INTERNAL_PREFIX = "/internal"

_EDGE = EDGE_HEADER.lower().encode()
_SERVICE = SERVICE_HEADER.lower().encode()


def service_headers(secret: str | None) -> dict[str, str]:
    """Headers of a service's client for another service's /internal/ routes."""
    return {SERVICE_HEADER: secret} if secret else {}


def is_internal(path: str) -> bool:
    return path == INTERNAL_PREFIX or path.startswith(INTERNAL_PREFIX + "/")


class TrustBoundary:
    def __init__(self, app: ASGIApp, *, edge_secret: str | None, service_secret: str | None) -> None:
        self.app = app
        self._edge = edge_secret.encode() if edge_secret else None
        self._service = service_secret.encode() if service_secret else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in OPEN_PATHS:
            return True
        expected, header = (self._service, _SERVICE) if is_internal(path) else (self._edge, _EDGE)
        if expected is None:
            return True
        presented = [value for name, value in scope["headers"] if name == header]
        # Exactly one, equal in constant time (the compare does not stop at the first difference).
        return len(presented) == 1 and hmac.compare_digest(presented[0], expected)

    @staticmethod
    async def _refuse(scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            # Before the handshake is accepted: the server answers the upgrade with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        language = pick_language(
            next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept-language"), None)
        )
        error = UntrustedCaller()
        body = orjson.dumps(error.body(language))
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
