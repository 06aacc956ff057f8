"""In-memory hubs: at most two clients (browser and phone) that meet under one client_id.

Hubs live only in this instance's memory; nginx sends both clients of a client_id to the same
instance (consistent hash on the query argument), so nothing is shared between instances and
losing an instance loses only its own hubs. Ticket state is the auth service's, in PostgreSQL.
"""

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket

logger = logging.getLogger(__name__)

MAX_CLIENTS = 2

# Close codes (RFC 6455): 1000 normal, 1008 policy violation, 1009 too big, 1013 try again later.
NORMAL = 1000
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013


class Client:
    """One websocket; sends are serialised because another client's task may send to it."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.closed = False
        # The client that made the hub is the browser showing the code; the one that joins it is
        # the phone (or whoever else read the code first).
        self.opener = False
        # The public user object the phone proved with its access token (the `identify` op).
        self.user: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            if self.closed:
                return
            try:
                await self.websocket.send_text(orjson.dumps(payload).decode())
            except Exception:  # the peer is gone; its own task will notice and leave
                self.closed = True

    async def close(self, code: int = NORMAL, reason: str = "") -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                await self.websocket.close(code, reason)
            except Exception:
                logger.debug("close on a dead websocket", exc_info=True)


@dataclass(eq=False)
class Hub:
    client_id: str
    deadline: float
    clients: list[Client] = field(default_factory=list)
    # Serialises what ends a hub from a message (a ticket, a refusal): one of them wins.
    ticket_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # What the phone is told about the browser that opened the hub (see requester.py).
    requester: dict[str, Any] | None = None
    _finishing: "asyncio.Future[None] | None" = None

    @property
    def finished(self) -> bool:
        """True once the hub granted access or timed out: nothing more happens in it."""
        return self._finishing is not None

    async def finish(self, payload: dict[str, Any]) -> None:
        """Tell every client `payload` and close them all with 1000.

        The first call does it; a concurrent call (the other client's task noticing the same
        deadline) waits for it, so no handler returns before its socket was closed properly.
        """
        if self._finishing is None:
            self._finishing = asyncio.ensure_future(self._finish(list(self.clients), payload))
        await asyncio.shield(self._finishing)

    @staticmethod
    async def _finish(clients: list[Client], payload: dict[str, Any]) -> None:
        await asyncio.gather(*(client.send(payload) for client in clients))
        await asyncio.gather(*(client.close(NORMAL) for client in clients))


class Refusal(enum.Enum):
    FULL = "full"
    BUSY = "busy"


class HubRegistry:
    def __init__(self, *, ttl: float, max_hubs: int) -> None:
        self.ttl = ttl
        self.max_hubs = max_hubs
        self.hubs: dict[str, Hub] = {}

    def join(self, client_id: str, client: Client) -> Hub | Refusal:
        hub = self.hubs.get(client_id)
        if hub is None:
            if len(self.hubs) >= self.max_hubs:
                return Refusal.BUSY
            hub = Hub(client_id, deadline=asyncio.get_running_loop().time() + self.ttl)
            self.hubs[client_id] = hub
            client.opener = True
        elif hub.finished or len(hub.clients) >= MAX_CLIENTS:
            return Refusal.FULL
        hub.clients.append(client)
        return hub

    def leave(self, hub: Hub, client: Client) -> None:
        """Take `client` out of `hub`; the clients still in it are the caller's to tell."""
        if client in hub.clients:
            hub.clients.remove(client)
        # A hub nobody is in is freed at once (and only the hub that is registered now).
        if not hub.clients and self.hubs.get(hub.client_id) is hub:
            del self.hubs[hub.client_id]

    def stats(self) -> dict[str, int]:
        return {
            "hubs": len(self.hubs),
            "clients": sum(len(hub.clients) for hub in self.hubs.values()),
        }


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = asyncio.get_running_loop().time()

    def take(self) -> bool:
        now = asyncio.get_running_loop().time()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
