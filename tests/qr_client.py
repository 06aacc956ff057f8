"""Websocket-client helpers shared by the QR tests (tests/ is on sys.path under pytest)."""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trusted
from websockets.asyncio.client import ClientConnection, connect

# Messages a client may ignore (API.md 13 allows informational ops).
INFORMATIONAL = {
    "hello",
    "mobile connected",
    "login request",
    "mobile identified",
    "mobile disconnected",
    "browser disconnected",
}


def new_client_id() -> str:
    return secrets.token_urlsafe(24)


@asynccontextmanager
async def hub_client(ws_url: str, client_id: str) -> AsyncIterator[ClientConnection]:
    """A client in the hub `client_id` (its hello already read). It carries nginx's header, for
    the tests that connect to an instance straight (through nginx, nginx overwrites it)."""
    headers = trusted.edge_headers() if trusted.SECRETS else None
    async with connect(f"{ws_url}?client_id={client_id}", open_timeout=10, additional_headers=headers) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["op"] == "hello", hello
        yield ws


async def next_op(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is not merely informational."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message.get("op") not in INFORMATIONAL:
            return dict(message)
