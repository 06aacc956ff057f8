"""The QR hub websocket (API.md endpoint 13) and this instance's internal stats."""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson
from fastapi import APIRouter, HTTPException, WebSocket

from common.errors import InvalidToken, NotAuthenticated, UpgradeRequired
from common.metrics import WEBSOCKET_SESSIONS
from common.rules import CLIENT_ID_RE, MAX_TICKET_LENGTH
from common.tokens import token_from_authorization
from qr_ws_service.auth_client import AuthClient, AuthUnavailable
from qr_ws_service.dependencies import AuthDep, HubsDep, SettingsDep
from qr_ws_service.hubs import (
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Client,
    Hub,
    Refusal,
    TokenBucket,
)
from qr_ws_service.logs import hub_label
from qr_ws_service.requester import describe_requester
from qr_ws_service.settings import QrWsSettings

logger = logging.getLogger(__name__)

router = APIRouter()
# Not under /auth_events/, so nginx never routes it: tests and operators read it on the loopback port.
internal_router = APIRouter(prefix="/internal", include_in_schema=False)


@router.get("/auth_events/qr_auth/", include_in_schema=False)
@router.get("/auth_events/qr_auth", include_in_schema=False)
async def qr_auth_over_http() -> None:
    """A plain GET of the hub's address (a browser, a client that forgot the upgrade): 426."""
    raise UpgradeRequired()


def _client_id(query: bytes) -> str:
    """The query's one `client_id`, as written: nginx routes a hub by the raw text, so a spelling
    that decodes to the same id (`%41` for `A`) would reach another instance's hub of that id.
    The allowed characters never need encoding; "" (malformed) otherwise, or when it is named
    twice (a second must not pick another hub)."""
    named = []
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if unquote_plus(key.decode("latin-1")) == "client_id":
            named.append(value)
    if len(named) != 1 or not named[0].isascii():
        return ""
    return named[0].decode("ascii")


@router.websocket("/auth_events/qr_auth/")
@router.websocket("/auth_events/qr_auth")
async def qr_auth(websocket: WebSocket, registry: HubsDep, auth: AuthDep, settings: SettingsDep) -> None:
    client_id = _client_id(websocket.scope["query_string"])
    client = Client(websocket)
    # Join before the handshake completes, so a client that sees the socket open is in the hub.
    joined = registry.join(client_id, client) if CLIENT_ID_RE.fullmatch(client_id) else None
    sessions = WEBSOCKET_SESSIONS.labels("qr_hub_client")
    sessions.inc()
    try:
        await websocket.accept()
        if joined is None:
            await client.send({"op": "hub is full"})
            await client.close()
        elif joined is Refusal.FULL:
            await client.send({"op": "clients already in hub"})
            await client.close()
        elif joined is Refusal.BUSY:
            await client.send({"op": "try again later"})
            await client.close(TRY_AGAIN_LATER)
        else:
            await _open(websocket, client, joined, settings, auth)
    finally:
        sessions.dec()
        if isinstance(joined, Hub):
            registry.leave(joined, client)
            await _tell_the_rest(joined, client)


async def _open(
    websocket: WebSocket, client: Client, hub: Hub, settings: QrWsSettings, auth: AuthClient
) -> None:
    if client.opener:
        hub.requester = describe_requester(websocket, datetime.now(UTC))
    remaining = max(0.0, hub.deadline - asyncio.get_running_loop().time())
    # `role` tells a phone that opened a code nobody shows any more (the hub was gone, so it made
    # a new one) that no computer is waiting on it.
    role = "browser" if client.opener else "phone"
    await client.send(
        {
            "op": "hello",
            "timeout": round(remaining),
            "heartbeat_timeout": settings.heartbeat_timeout,
            "role": role,
        }
    )
    if not client.opener:
        # Only the joining client (the phone) learns where the browser is: it is the one asked
        # to approve, and the browser needs nothing about itself.
        if hub.requester is not None:
            await client.send({"op": "login request", **hub.requester})
        await _tell(_others(hub, client), {"op": "mobile connected"})
    await _serve(websocket, client, hub, settings, auth)


def _others(hub: Hub, client: Client) -> list[Client]:
    return [other for other in hub.clients if other is not client]


async def _tell(clients: list[Client], payload: dict[str, Any]) -> None:
    await asyncio.gather(*(other.send(payload) for other in clients))


async def _tell_the_rest(hub: Hub, client: Client) -> None:
    """A client left a hub that is still open: the one waiting on it should know.

    When the browser leaves, the hub ends (the phone is told and closed with 1000): the login it
    showed a code for can no longer happen. Kept open, it had a free place, and whoever connected
    next with its client_id took the browser's: told the phone's account, then given the ticket
    the phone sent. Until the phone has left, a newcomer gets `clients already in hub`; after,
    it opens a new hub."""
    if hub.finished or not hub.clients:
        return
    if client.opener:
        async with hub.ticket_lock:  # a ticket being accepted now ends the hub its own way
            if not hub.finished:
                await hub.finish({"op": "browser disconnected"})
    else:
        await _tell([other for other in hub.clients if other.opener], {"op": "mobile disconnected"})


async def _serve(
    websocket: WebSocket, client: Client, hub: Hub, settings: QrWsSettings, auth: AuthClient
) -> None:
    loop = asyncio.get_running_loop()
    bucket = TokenBucket(settings.rate_per_second, settings.rate_burst)
    while not client.closed:
        hub_left = hub.deadline - loop.time()
        if hub_left <= 0:
            await hub.finish({"op": "timeout"})
            return
        try:
            message = await asyncio.wait_for(websocket.receive(), min(hub_left, settings.heartbeat_timeout))
        except TimeoutError:
            if hub.deadline - loop.time() <= 0:
                await hub.finish({"op": "timeout"})
            else:
                await client.close(reason="heartbeat timeout")
            return
        if message["type"] == "websocket.disconnect" or client.closed:
            return
        if not bucket.take():
            logger.info("websocket closed for flooding", extra={"hub": hub_label(hub.client_id)})
            await client.close(POLICY_VIOLATION, "rate limit")
            return
        text: str | None = message.get("text")
        data: bytes | None = message.get("bytes")
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > settings.max_frame_bytes:
            await client.close(MESSAGE_TOO_BIG, "frame too large")
            return
        await _handle(client, hub, _parse(text), auth)


def _parse(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def _handle(client: Client, hub: Hub, message: dict[str, Any] | None, auth: AuthClient) -> None:
    op = message.get("op") if message is not None else None
    if op == "heartbeat":
        await client.send({"op": "heartbeat_ack"})
    elif op == "pending_ticket" and message is not None:
        await _pending_ticket(client, hub, message.get("encrypted_user_payload"), auth)
    elif op == "identify" and message is not None and not client.opener:
        await _identify(client, hub, message.get("token"), auth)
    elif op == "deny":
        await _deny(hub)
    else:
        await client.send({"op": "unknown op"})


async def _identify(client: Client, hub: Hub, token: object, auth: AuthClient) -> None:
    """The phone proves its account with its access token; the browser is told the public user
    object only (never the token), so the person sees who is about to log in before approving."""
    if client.user is not None:
        await client.send({"op": "already identified"})
        return
    try:
        # `Bearer <token>` or a bare token, as the HTTP API takes it.
        access_token = token_from_authorization(token if isinstance(token, str) else None)
    except (NotAuthenticated, InvalidToken):
        await client.send({"op": "bad token"})
        return
    try:
        user = await auth.identify(access_token)
    except AuthUnavailable as exc:
        logger.warning("auth service unavailable", extra={"error": str(exc)})
        await client.send({"op": "try again later"})
        return
    if user is None:
        await client.send({"op": "bad token"})
        return
    if hub.finished or client.closed:
        return
    client.user = user
    await client.send({"op": "identified", "user": user})
    await _tell(_others(hub, client), {"op": "mobile identified", "user": user})


async def _deny(hub: Hub) -> None:
    """Either client may refuse the login: every client is told and the hub ends."""
    async with hub.ticket_lock:
        if not hub.finished:
            await hub.finish({"op": "denied"})


async def _pending_ticket(client: Client, hub: Hub, ticket: object, auth: AuthClient) -> None:
    if not isinstance(ticket, str) or not ticket or len(ticket) > MAX_TICKET_LENGTH:
        await client.send({"op": "bad ticket"})
        return
    # One ticket at a time per hub: once one is accepted the hub is finished and the rest are moot.
    async with hub.ticket_lock:
        if hub.finished:
            return
        try:
            accepted = await auth.accept_ticket(ticket, hub.client_id)
        except AuthUnavailable as exc:
            logger.warning("auth service unavailable", extra={"error": str(exc)})
            await client.send({"op": "try again later"})
            return
        if not accepted:
            await client.send({"op": "bad ticket"})
            return
        await hub.finish({"op": "access granted", "auth_token": ticket})


@internal_router.get("/stats")
async def stats(registry: HubsDep, settings: SettingsDep) -> dict[str, Any]:
    return {"instance_id": settings.instance_id, **registry.stats()}


@internal_router.get("/hubs")
async def hub_info(client_id: str, registry: HubsDep) -> dict[str, Any]:
    # The id travels in the query, which the access log leaves out.
    hub = registry.hubs.get(client_id)
    if hub is None:
        raise HTTPException(404)
    return {"client_id": client_id, "clients": len(hub.clients), "finished": hub.finished}
