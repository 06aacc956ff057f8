"""One instance's sessions, and the tasks that feed and watch them.

- The reader follows the global stream (common.events) and hands each entry to the local
  sessions of its recipients. Its position (`cursor`) is where a session registered now starts.
- A session owns a queue of frames and, only while the queue is not empty, a writer task: an
  idle session is its connection's receive loop and nothing else.
- The flusher writes checkpoints of sessions that sent dispatches, in one round trip per batch.
- The watcher asks the revocation list and the log-out-everywhere cutoffs about every live
  session's token once a second, and
  refreshes the live resume records' TTLs.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.websockets import WebSocket

from common.access import AccessCheck
from common.events import GLOBAL_STREAM, RETENTION_KEY
from common.metrics import EVENTS_DELIVERED, FANOUT_LATENCY, WEBSOCKET_SESSIONS
from common.tokens import AccessClaims
from events_service.protocol import RECONNECT, CloseCode, dispatch_prefix, parse_stream_id
from events_service.records import REFRESH_SECONDS, Records

logger = logging.getLogger("events_service.hub")

StreamId = tuple[int, int]
READ_BLOCK_MS = 5_000
READ_COUNT = 1_000
FLUSH_DELAY_SECONDS = 0.005


SESSIONS_GAUGE = WEBSOCKET_SESSIONS.labels("events")


class Dispatch:
    """A queued dispatch: a stream entry (`entry_id` set) or READY/RESUMED (not in the stream).
    `delivered` is the dispatch name's counter (looked up once per event by the fan-out)."""

    __slots__ = ("delivered", "entry_id", "prefix")

    def __init__(self, prefix: str, delivered: Any, entry_id: str | None = None) -> None:
        self.prefix = prefix
        self.entry_id = entry_id
        self.delivered = delivered


class Session:
    """An identified (or resumed) session on this instance."""

    __slots__ = (
        "closing",
        "expires_at",
        "held",
        "hub",
        "issued_at",
        "jti",
        "last_id",
        "last_id_text",
        "owner",
        "queue",
        "segment_start",
        "seq",
        "session_id",
        "user_id",
        "websocket",
        "writer",
    )

    def __init__(
        self,
        hub: "Hub",
        websocket: WebSocket,
        *,
        session_id: str,
        user_id: int,
        jti: str,
        expires_at: int,
        issued_at: float,
        owner: str,
        seq: int,
    ) -> None:
        self.hub = hub
        self.websocket = websocket
        self.session_id = session_id
        self.user_id = user_id
        self.jti = jti
        self.expires_at = expires_at
        self.issued_at = issued_at
        self.owner = owner
        self.seq = seq  # the last seq sent
        self.segment_start = seq + 1  # checkpoints are true only from here on (records.py)
        self.last_id: StreamId = (0, 0)  # the last stream entry queued
        self.last_id_text = "0-0"  # the last stream entry sent
        self.queue: deque[str | Dispatch] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.held = True  # frames wait until READY / the replay is queued in front of them
        self.closing = False

    # ---- feeding ---------------------------------------------------------------------------------
    def push_entry(self, stream_id: StreamId, entry_id: str, prefix: str, delivered: Any) -> None:
        if stream_id <= self.last_id or self.closing:
            return  # already queued (a resume's replay reached past it)
        self.last_id = stream_id
        self.queue.append(Dispatch(prefix, delivered, entry_id))
        if len(self.queue) > self.hub.queue_limit:
            self.hub.close_soon(self, CloseCode.UNKNOWN_ERROR, "slow consumer: resume")
            return
        self._wake()

    def push_frame(self, frame: str) -> None:
        if self.closing:
            return
        self.queue.append(frame)
        self._wake()

    def release(self, first: list[str | Dispatch]) -> None:
        """Queue `first` (READY, or a replay and RESUMED) ahead of what arrived meanwhile."""
        self.queue.extendleft(reversed(first))
        self.held = False
        self._wake()

    def _wake(self) -> None:
        if self.writer is None and not self.held and self.queue:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        sent = False
        try:
            while self.queue and not self.closing:
                item = self.queue.popleft()
                if isinstance(item, Dispatch):
                    # The seq and its entry move together, before the send: a send cancelled
                    # while it waits for the socket has written its frame already, and the pair
                    # must stay true for the checkpoint (records.py).
                    self.seq += 1
                    if item.entry_id is not None:
                        self.last_id_text = item.entry_id
                    sent = True
                    await self.websocket.send_text(item.prefix + str(self.seq) + "}")
                    item.delivered.inc()
                    if item.entry_id is not None:  # its id is the publication time (ms)
                        FANOUT_LATENCY.observe(
                            max(0.0, time.time() - parse_stream_id(item.entry_id)[0] / 1000)
                        )
                else:
                    await self.websocket.send_text(item)
        except Exception:  # the connection is gone: its receive loop ends the session
            self.queue.clear()
        finally:
            self.writer = None
            if sent and self.seq >= self.segment_start:
                self.hub.mark_dirty(self)

    async def wait_sent(self) -> None:
        while self.writer is not None:
            await asyncio.wait([self.writer])

    def checkpoint_item(self, released: bool) -> tuple[str, str, int | None, str, bool]:
        """Before READY/RESUMED went out the record's own checkpoint stands (seq None)."""
        seq = self.seq if self.seq >= self.segment_start else None
        return (self.session_id, self.owner, seq, self.last_id_text, released)


class Hub:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        reader_redis: aioredis.Redis,
        records: Records,
        access: AccessCheck,
        queue_limit: int,
        retention_ms: int,
        revocation_poll_seconds: float,
    ) -> None:
        self.redis = redis
        self.reader_redis = reader_redis
        self.records = records
        self.access = access
        self.queue_limit = queue_limit
        self.retention_ms = retention_ms
        self.revocation_poll_seconds = revocation_poll_seconds
        self.by_user: dict[int, list[Session]] = {}
        self.by_id: dict[str, Session] = {}
        self.cursor: StreamId | None = None
        self.cursor_text = "0-0"
        self.connections = 0
        self.draining = False
        self._dirty: dict[str, Session] = {}
        self._flush_wanted = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: set[asyncio.Task[None]] = set()

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(), name="events-reader"),
            loop.create_task(self._flush(), name="events-flusher"),
            loop.create_task(self._watch(), name="events-watcher"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._write_checkpoints()

    async def ready(self, wait_seconds: float) -> bool:
        """Whether the reader knows its position (Redis answered) within `wait_seconds`."""
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    await self._ready.wait()
        return self._ready.is_set()

    # ---- sessions ------------------------------------------------------------------------------------
    def register(self, session: Session) -> None:
        """From now on the session gets every entry after the reader's position."""
        assert self.cursor is not None
        session.last_id = self.cursor
        session.last_id_text = self.cursor_text
        self.by_id[session.session_id] = session
        self.by_user.setdefault(session.user_id, []).append(session)
        SESSIONS_GAUGE.inc()

    def unregister(self, session: Session) -> None:
        session.closing = True
        session.queue.clear()
        if self.by_id.get(session.session_id) is session:
            del self.by_id[session.session_id]
            SESSIONS_GAUGE.dec()
        sessions = self.by_user.get(session.user_id)
        if sessions is not None:
            with contextlib.suppress(ValueError):
                sessions.remove(session)
            if not sessions:
                del self.by_user[session.user_id]
        if self._dirty.get(session.session_id) is session:
            del self._dirty[session.session_id]

    def close_soon(self, session: Session, code: int, reason: str) -> None:
        """End a session from outside its receive loop (which then sees the disconnect)."""
        if session.closing:
            return
        session.closing = True
        session.queue.clear()
        task = asyncio.get_running_loop().create_task(self._close(session, code, reason))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    @staticmethod
    async def _close(session: Session, code: int, reason: str) -> None:
        if session.writer is not None:
            session.writer.cancel()
        with contextlib.suppress(Exception):
            await session.websocket.close(code, reason)

    def mark_dirty(self, session: Session) -> None:
        if session.closing:
            return
        self._dirty[session.session_id] = session
        self._flush_wanted.set()

    def stats(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "sessions": len(self.by_id),
            "users": len(self.by_user),
            "queued_frames": sum(len(s.queue) for s in self.by_id.values()),
            "writers": sum(1 for s in self.by_id.values() if s.writer is not None),
            "dirty": len(self._dirty),
            "cursor": self.cursor_text if self.cursor is not None else None,
        }

    async def drain(self, seconds: float) -> None:
        """Graceful stop: RECONNECT (op 7) to every session, then wait (at most `seconds`) for
        the frames to go out and the checkpoints to be written."""
        self.draining = True
        sessions = list(self.by_id.values())
        for session in sessions:
            session.push_frame(RECONNECT)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                for session in sessions:
                    await session.wait_sent()
        await self._write_checkpoints()

    # ---- the reader --------------------------------------------------------------------------------
    async def _resolve_cursor(self) -> None:
        # Publish the retention this instance's resume window needs (writers trim by it).
        await self.redis.set(RETENTION_KEY, self.retention_ms)
        last: Any = await self.reader_redis.xrevrange(GLOBAL_STREAM, "+", "-", count=1)
        text = last[0][0].decode() if last else "0-0"
        self.cursor, self.cursor_text = parse_stream_id(text), text
        self._ready.set()

    async def _read(self) -> None:
        delay = 0.05
        while True:
            try:
                if self.cursor is None:
                    await self._resolve_cursor()
                answer: Any = await self.reader_redis.xread(
                    {GLOBAL_STREAM: self.cursor_text}, count=READ_COUNT, block=READ_BLOCK_MS
                )
                delay = 0.05
            except (RedisError, OSError) as exc:
                logger.warning("events stream unreachable, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            for _stream, entries in answer or ():
                for raw_id, fields in entries:
                    self._fan_out(raw_id.decode(), fields)

    def _fan_out(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        stream_id = parse_stream_id(entry_id)
        self.cursor, self.cursor_text = stream_id, entry_id
        kicked = fields.get(b"k")
        if kicked is not None:
            session = self.by_id.get(kicked.decode())
            if session is not None and session.owner != fields.get(b"o", b"").decode():
                self.close_soon(session, CloseCode.UNKNOWN_ERROR, "session resumed elsewhere")
            return
        prefix: str | None = None
        delivered = None
        for user in fields.get(b"u", b"").split(b","):
            sessions = self.by_user.get(int(user)) if user.isdigit() else None
            if not sessions:
                continue
            if prefix is None:
                kind = fields[b"t"].decode()
                prefix = dispatch_prefix(kind, fields[b"d"].decode())
                delivered = EVENTS_DELIVERED.labels(kind)
            for session in sessions:
                session.push_entry(stream_id, entry_id, prefix, delivered)

    # ---- checkpoints -------------------------------------------------------------------------------
    async def _write_checkpoints(self, released: list[Session] | None = None) -> None:
        dirty, self._dirty = self._dirty, {}
        items = [session.checkpoint_item(False) for session in dirty.values()]
        items += [session.checkpoint_item(True) for session in released or ()]
        if not items:
            return
        try:
            await self.records.checkpoint(items)
        except (RedisError, OSError):
            for session in dirty.values():  # written with the next batch
                if not session.closing:
                    self._dirty.setdefault(session.session_id, session)
            raise

    async def _flush(self) -> None:
        while True:
            await self._flush_wanted.wait()
            await asyncio.sleep(FLUSH_DELAY_SECONDS)  # let a fan-out's writers finish together
            self._flush_wanted.clear()
            try:
                await self._write_checkpoints()
            except (RedisError, OSError):
                await asyncio.sleep(0.5)
                self._flush_wanted.set()

    async def release(self, session: Session) -> None:
        """The connection ended: the record keeps the session for the resume window."""
        self.unregister(session)
        with contextlib.suppress(RedisError, OSError):
            await self.records.checkpoint([session.checkpoint_item(True)])

    # ---- the watcher -------------------------------------------------------------------------------
    async def _watch(self) -> None:
        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(self.revocation_poll_seconds)
            try:
                await self._close_revoked()
                if time.monotonic() - refreshed >= REFRESH_SECONDS:
                    refreshed = time.monotonic()
                    await self.records.refresh(list(self.by_id))
            except Exception as exc:  # the database or Redis is down: next round
                logger.warning("session watch failed", extra={"error": repr(exc)})

    async def _close_revoked(self) -> None:
        by_jti: dict[str, list[Session]] = {}
        tokens: list[AccessClaims] = []
        for session in self.by_id.values():
            if session.jti not in by_jti:
                tokens.append(
                    AccessClaims(session.user_id, session.jti, session.expires_at, session.issued_at)
                )
            by_jti.setdefault(session.jti, []).append(session)
        if not tokens:
            return
        for jti in await self.access.revoked_among(tokens):
            for session in by_jti.get(jti, ()):
                self.close_soon(session, CloseCode.AUTHENTICATION_FAILED, "token revoked")
                with contextlib.suppress(RedisError, OSError):
                    await self.records.delete(session.session_id)
