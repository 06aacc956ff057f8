"""One websocket connection of the event gateway, from HELLO to its close (API.md 20)."""

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import asyncpg
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from common.access import AccessCheck
from common.errors import InvalidToken, NotAuthenticated
from common.metrics import EVENTS_DELIVERED
from common.tokens import AccessClaims
from events_service import repository
from events_service.hub import Dispatch, Hub, Session
from events_service.protocol import (
    HEARTBEAT_ACK,
    INVALID_SESSION,
    KNOWN_OPS,
    RECONNECT,
    CloseCode,
    FrameRate,
    Op,
    ProtocolViolation,
    dispatch_prefix,
    hello,
    parse_frame,
    parse_stream_id,
)
from events_service.records import BadSeq, Records
from events_service.settings import EventsSettings

logger = logging.getLogger("events_service.gateway")

# A client's session id is ours (token_urlsafe(18): 24 characters); anything longer is unknown.
MAX_SESSION_ID_LENGTH = 64
# How long IDENTIFY / RESUME wait for the reader to know its place (Redis) before giving up.
READY_WAIT_SECONDS = 2.0
# How long a connection closed for a protocol violation may take to send what its session queued.
FLUSH_BEFORE_CLOSE_SECONDS = 0.5
# 1012 "service restart": the instance is stopping (after op 7).
CLOSE_RESTARTING = 1012
CLOSE_INTERNAL_ERROR = 1011


def entry_before(entry_id: str) -> str:
    """A stream id just below `entry_id` (an exclusive start that includes `entry_id`)."""
    ms, seq = parse_stream_id(entry_id)
    return f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}-18446744073709551615"


class Gateway:
    """What every connection shares."""

    def __init__(
        self,
        settings: EventsSettings,
        *,
        hub: Hub,
        access: AccessCheck,
        records: Records,
        pool: asyncpg.Pool,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.access = access
        self.records = records
        self.pool = pool
        self.hello = hello(settings.heartbeat_interval_ms)
        self.heartbeat_grace = settings.heartbeat_interval_ms * 1.5 / 1000

    async def serve(self, websocket: WebSocket) -> None:
        await Connection(self, websocket).run()


class Connection:
    __slots__ = ("expires", "gateway", "heartbeat_by", "identify_by", "rate", "session", "websocket")

    def __init__(self, gateway: Gateway, websocket: WebSocket) -> None:
        self.gateway = gateway
        self.websocket = websocket
        self.session: Session | None = None
        settings = gateway.settings
        self.rate = FrameRate(settings.rate_limit_frames, settings.rate_limit_window_seconds)
        now = asyncio.get_running_loop().time()
        self.identify_by = now + settings.identify_timeout_seconds
        self.heartbeat_by = now + gateway.heartbeat_grace
        self.expires = float("inf")

    async def run(self) -> None:
        hub = self.gateway.hub
        websocket = self.websocket
        await websocket.accept()
        hub.connections += 1
        try:
            await websocket.send_text(self.gateway.hello)
            if hub.draining:
                await websocket.send_text(RECONNECT)
                await websocket.close(CLOSE_RESTARTING, "restarting: connect again")
                return
            await self._receive_loop()
        except ProtocolViolation as violation:
            await self._close(violation.code, violation.reason, flush=True)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left (RuntimeError: a send raced the close)
        except Exception:
            logger.exception("event connection failed")
            await self._close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            hub.connections -= 1
            if self.session is not None:
                await hub.release(self.session)

    async def _close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """`flush`: what the session has queued goes out first, for a moment at most (a READY
        queued before a second IDENTIFY, which a client needs to make sense of the 4005)."""
        session = self.session
        if session is not None:
            if flush and session.writer is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(session.writer), FLUSH_BEFORE_CLOSE_SECONDS)
            session.closing = True
            if session.writer is not None:
                session.writer.cancel()
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)

    def _send(self, frame: str) -> Any:
        """Frames after IDENTIFY go through the session's queue (one writer, in order)."""
        if self.session is not None:
            self.session.push_frame(frame)
            return None
        return self.websocket.send_text(frame)

    async def _receive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.gateway.settings
        receive = self.websocket.receive
        while True:
            if self.session is None:
                deadline = min(self.identify_by, self.heartbeat_by)
            else:
                deadline = min(self.heartbeat_by, self.expires)
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # Which deadline passed is the one that was nearest (the loop's clock may wake a
                # fraction of a millisecond before it).
                if deadline == self.expires:
                    raise ProtocolViolation(CloseCode.AUTHENTICATION_FAILED, "token expired") from None
                if self.session is None and deadline == self.identify_by:
                    raise ProtocolViolation(CloseCode.SESSION_TIMED_OUT, "no IDENTIFY in time") from None
                raise ProtocolViolation(CloseCode.SESSION_TIMED_OUT, "no heartbeat in time") from None
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                raise ProtocolViolation(CloseCode.DECODE_ERROR, "frames are JSON text")
            if len(text) > settings.max_frame_bytes or len(text.encode()) > settings.max_frame_bytes:
                raise ProtocolViolation(CloseCode.DECODE_ERROR, "frame too large")
            if not self.rate.allow(loop.time()):
                raise ProtocolViolation(CloseCode.RATE_LIMITED, "too many frames")
            op, d = parse_frame(text)
            if op not in KNOWN_OPS:
                raise ProtocolViolation(CloseCode.UNKNOWN_OPCODE, "unknown opcode")
            if op == Op.HEARTBEAT:
                if d is not None and (not isinstance(d, int) or isinstance(d, bool)):
                    raise ProtocolViolation(CloseCode.DECODE_ERROR, "HEARTBEAT d is the last seq or null")
                self.heartbeat_by = loop.time() + self.gateway.heartbeat_grace
                sent = self._send(HEARTBEAT_ACK)
                if sent is not None:
                    await sent
            elif op == Op.IDENTIFY or op == Op.RESUME:
                if self.session is not None:
                    raise ProtocolViolation(CloseCode.ALREADY_AUTHENTICATED, "already identified")
                if not isinstance(d, dict):
                    raise ProtocolViolation(CloseCode.DECODE_ERROR, "d must be an object")
                if op == Op.IDENTIFY:
                    await self._identify(d)
                else:
                    await self._resume(d)
            elif self.session is None:
                raise ProtocolViolation(CloseCode.NOT_AUTHENTICATED, "IDENTIFY first")
            else:
                raise ProtocolViolation(CloseCode.UNKNOWN_OPCODE, "not an opcode a client sends")

    async def _check(self, token: object) -> AccessClaims:
        if not isinstance(token, str):
            raise ProtocolViolation(CloseCode.AUTHENTICATION_FAILED, "token missing")
        try:
            claims = await self.gateway.access.check(token)
        except (InvalidToken, NotAuthenticated):
            raise ProtocolViolation(CloseCode.AUTHENTICATION_FAILED, "authentication failed") from None
        if not await self.gateway.hub.ready(READY_WAIT_SECONDS):
            raise ProtocolViolation(CloseCode.UNKNOWN_ERROR, "events unavailable, try again")
        return claims

    def _start(self, claims: AccessClaims, session_id: str, seq: int) -> Session:
        gateway = self.gateway
        session = Session(
            gateway.hub,
            self.websocket,
            session_id=session_id,
            user_id=claims.user_id,
            jti=claims.jti,
            expires_at=claims.expires_at,
            issued_at=claims.issued_at,
            owner=f"{gateway.settings.instance_id}:{secrets.token_hex(6)}",
            seq=seq,
        )
        loop = asyncio.get_running_loop()
        self.expires = loop.time() + (claims.expires_at - time.time())
        gateway.hub.register(session)
        self.session = session
        return session

    async def _identify(self, d: dict[str, Any]) -> None:
        claims = await self._check(d.get("token"))
        gateway = self.gateway
        session = self._start(claims, secrets.token_urlsafe(18), 0)
        try:
            parts = await repository.ready_parts(gateway.pool, claims.user_id)
            await gateway.records.create(
                session.session_id, token=claims, owner=session.owner, start_id=session.last_id_text
            )
        except (RedisError, OSError, asyncpg.PostgresError) as exc:
            logger.warning("IDENTIFY failed", extra={"error": repr(exc)})
            raise ProtocolViolation(CloseCode.UNKNOWN_ERROR, "events unavailable, try again") from None
        ready = (
            '{"session_id":"' + session.session_id + '","user":' + parts.user_json
            + ',"chats":' + parts.chats_json + "}"
        )  # fmt: skip
        session.release([Dispatch(dispatch_prefix("READY", ready), EVENTS_DELIVERED.labels("READY"))])

    async def _resume(self, d: dict[str, Any]) -> None:
        claims = await self._check(d.get("token"))
        session_id, seq = d.get("session_id"), d.get("seq")
        if not isinstance(session_id, str):
            raise ProtocolViolation(CloseCode.DECODE_ERROR, "RESUME needs token, session_id and seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ProtocolViolation(CloseCode.INVALID_SEQ, "bad seq: the last seq received, an integer")
        gateway = self.gateway
        hub, records = gateway.hub, gateway.records
        try:
            record = None
            if 0 < len(session_id) <= MAX_SESSION_ID_LENGTH and session_id.isascii():
                record = await records.load(session_id)
            # Its token revoked while no connection held it (the watcher sees only held sessions).
            held_by = record.token if record is not None and record.user_id == claims.user_id else None
            if held_by is not None and await gateway.access.revoked_among([held_by]):
                await records.delete(session_id)
                record = None
            if record is None or record.user_id != claims.user_id:
                await self.websocket.send_text(INVALID_SESSION)
                # The client identifies anew on this connection: a fresh deadline for it.
                now = asyncio.get_running_loop().time()
                self.identify_by = now + gateway.settings.identify_timeout_seconds
                return
            try:
                start = await records.replay_start(record, seq)
            except BadSeq:
                raise ProtocolViolation(CloseCode.INVALID_SEQ, "bad seq") from None
            previous = hub.by_id.get(session_id)
            if previous is not None:  # the same session's older connection, here
                # Closed first: unregister marks it closing, and close_soon leaves a session
                # marked closing alone (its connection then stayed open, answering nothing).
                hub.close_soon(previous, CloseCode.UNKNOWN_ERROR, "session resumed elsewhere")
                hub.unregister(previous)
            session = self._start(claims, session_id, seq)
            entries = await records.entries(claims.user_id, start, session.last_id_text)
            after = start[1:] if start.startswith("(") else entry_before(start)
            last_id = entries[-1].entry_id if entries else after
            await records.take_over(
                session_id,
                old=record,
                token=claims,
                owner=session.owner,
                resumed_from=seq,
                resumed_after=after,
                replayed=len(entries),
                last_id=last_id,
            )
        except (RedisError, OSError, asyncpg.PostgresError) as exc:
            logger.warning("RESUME failed", extra={"error": repr(exc)})
            raise ProtocolViolation(CloseCode.UNKNOWN_ERROR, "events unavailable, try again") from None
        session.segment_start = seq + len(entries) + 1
        session.last_id_text = last_id
        frames: list[str | Dispatch] = [
            Dispatch(
                dispatch_prefix(entry.kind, entry.payload),
                EVENTS_DELIVERED.labels(entry.kind),
                entry.entry_id,
            )
            for entry in entries
        ]
        frames.append(Dispatch(dispatch_prefix("RESUMED", "{}"), EVENTS_DELIVERED.labels("RESUMED")))
        session.release(frames)
