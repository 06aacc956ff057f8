"""The stack's trust-boundary secrets, for tests that talk to an instance directly (its internal
stats, a websocket on one chosen instance), as nginx and the services do. Filled by the `stack`
fixture (tests/conftest.py)."""

from typing import Any

import httpx

from common.boundary import EDGE_HEADER, SERVICE_HEADER

SECRETS: dict[str, str] = {}


def edge_headers() -> dict[str, str]:
    """What nginx adds to every request it proxies."""
    return {EDGE_HEADER: SECRETS["edge"]}


def service_headers() -> dict[str, str]:
    """What a service sends to another's /internal/ routes."""
    return {SERVICE_HEADER: SECRETS["service"]}


def internal_client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers=service_headers(), **kwargs)
