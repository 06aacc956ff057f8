"""The trust boundary's rule, on a bare ASGI app (the stack-wide tests are
tests/test_platform_boundary.py): which header opens which path, and what a refusal looks like."""

from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from common.boundary import EDGE_HEADER, SERVICE_HEADER, TrustBoundary

EDGE = "edge-secret-0123456789abcdef"
SERVICE = "service-secret-0123456789abcdef"


async def served(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


async def status(app: Any, path: str, headers: list[tuple[str, str]]) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        response = await client.get(path, headers=headers)
    if response.status_code == 403:
        assert response.json()["code"] == "untrusted_caller"
    return response.status_code


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/users/me/", [], 403),
        ("/users/me/", [(EDGE_HEADER, EDGE)], 200),
        ("/users/me/", [(EDGE_HEADER, EDGE[:-1] + "x")], 403),
        ("/users/me/", [(EDGE_HEADER, EDGE + "x")], 403),
        ("/users/me/", [(EDGE_HEADER, EDGE), (EDGE_HEADER, EDGE)], 403),  # exactly one
        ("/users/me/", [(SERVICE_HEADER, SERVICE)], 403),
        ("/internal/users/1", [], 403),
        ("/internal/users/1", [(EDGE_HEADER, EDGE)], 403),
        ("/internal/users/1", [(SERVICE_HEADER, SERVICE)], 200),
        ("/internal", [(SERVICE_HEADER, SERVICE)], 200),
        ("/internalish", [(EDGE_HEADER, EDGE)], 200),  # a public path that only starts alike
        ("/healthz", [], 200),
        ("/readyz", [], 200),
        ("/metrics", [], 200),
    ],
)
async def test_which_header_opens_which_path(
    path: str, headers: list[tuple[str, str]], expected: int
) -> None:
    app = TrustBoundary(served, edge_secret=EDGE, service_secret=SERVICE)
    assert await status(app, path, headers) == expected


async def test_an_unconfigured_secret_turns_its_check_off() -> None:
    """A service built in a unit test has none; production settings refuse to start without."""
    app = TrustBoundary(served, edge_secret=None, service_secret=None)
    assert await status(app, "/users/me/", []) == 200
    assert await status(app, "/internal/users/1", []) == 200


async def test_a_refusal_speaks_the_callers_language() -> None:
    app = TrustBoundary(served, edge_secret=EDGE, service_secret=SERVICE)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        response = await client.get("/users/me/", headers={"Accept-Language": "ru"})
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "detail": "Запрещено: этот адрес обслуживает только nginx и сервисы стека",
        "code": "untrusted_caller",
    }
