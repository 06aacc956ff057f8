"""The Redis layout of events, shared by the writers (the chat service's relay and its typing
route) and the reader (the events service).

- `chat:ev:all`: the global stream every events instance reads for live fan-out. An entry is
  `u` (recipient user ids, comma-separated), `t` (dispatch name), `e` (event id: the outbox id,
  empty for typing), `d` (the event's `d`, JSON text). An entry with `k` instead is a control
  message: session `k` was resumed by owner `o`, so any other connection holding it closes.
- `chat:ev:u:<user_id>`: each user's stream, the same entries (without `u`) under the same entry
  ids as in the global stream, so a session's position is one id in both. It is what a resume
  replays. Trimmed by age and expired when idle, after `chat:ev:retention_ms`.
- `chat:ev:dedupe:<event id>`: published marks (with a TTL). A relay that published a batch and
  died before deleting its outbox rows publishes them again; the marks make that a no-op.
- `chat:ev:s:<session_id>`: a session's resume record (see events_service.records).
- `chat:ev:retention_ms`: how long entries are kept, set by the events service from its resume
  window (the writers trim by it; absent, DEFAULT_RETENTION_MS).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from common.metrics import REDIS_CALLS, REDIS_ERRORS

PREFIX = "chat:ev:"
GLOBAL_STREAM = "chat:ev:all"
RETENTION_KEY = "chat:ev:retention_ms"
DEDUPE_PREFIX = "chat:ev:dedupe:"
USER_STREAM_PREFIX = "chat:ev:u:"
SESSION_PREFIX = "chat:ev:s:"
DEFAULT_RETENTION_MS = 300_000


def user_stream(user_id: int) -> str:
    return f"{USER_STREAM_PREFIX}{user_id}"


def session_key(session_id: str) -> str:
    return f"{SESSION_PREFIX}{session_id}"


# One call publishes a whole batch, atomically: Redis runs a script alone, so the global stream
# and every user stream receive the batch's entries in the same order, under the same ids.
# ARGV: dedupe TTL in seconds (0: no dedupe, for typing), default retention (ms), then groups of
# four: event id, dispatch name, recipients (comma-separated), payload JSON.
PUBLISH_SCRIPT = """
local ttl = tonumber(ARGV[1])
local keep = tonumber(redis.call('GET', KEYS[2]) or ARGV[2])
local now = redis.call('TIME')
local cut = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - keep
local published = 0
for i = 3, #ARGV, 4 do
  local eid, kind, recipients, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local fresh = true
  if ttl > 0 then
    fresh = redis.call('SET', KEYS[3] .. eid, '1', 'NX', 'EX', ttl)
  end
  if fresh then
    local id = redis.call('XADD', KEYS[1], 'MINID', '~', cut, '*',
                          'u', recipients, 't', kind, 'e', eid, 'd', payload)
    for user in string.gmatch(recipients, '%d+') do
      local key = KEYS[4] .. user
      redis.call('XADD', key, 'MINID', '~', cut, id, 't', kind, 'e', eid, 'd', payload)
      redis.call('PEXPIRE', key, keep)
    end
    published = published + 1
  end
end
return published
"""


@dataclass(frozen=True, slots=True)
class Event:
    """One event to publish: `payload` is its `d`, already JSON."""

    event_id: str  # the outbox id; "" for an ephemeral event
    kind: str
    recipients: Sequence[int]
    payload: str


class EventPublisher:
    """Publishes events through PUBLISH_SCRIPT (EVALSHA, loaded again after a Redis restart)."""

    def __init__(self, redis: aioredis.Redis, *, dedupe_seconds: int = 600) -> None:
        self.redis = redis
        self.dedupe_seconds = dedupe_seconds
        self._script = redis.register_script(PUBLISH_SCRIPT)

    async def _run(self, events: Iterable[Event], dedupe_seconds: int) -> int:
        args: list[str | int] = [dedupe_seconds, DEFAULT_RETENTION_MS]
        for event in events:
            args += [event.event_id, event.kind, ",".join(map(str, event.recipients)), event.payload]
        keys = [GLOBAL_STREAM, RETENTION_KEY, DEDUPE_PREFIX, USER_STREAM_PREFIX]
        return int(await self._script(keys=keys, args=args))

    async def publish(self, events: Sequence[Event]) -> int:
        """Outbox events, each at most once (per the dedupe marks); how many were new."""
        if not events:
            return 0
        return await self._run(events, self.dedupe_seconds)

    async def publish_ephemeral(self, event: Event) -> None:
        """An event with no outbox row (typing): no id, no dedupe."""
        await self._run([event], 0)


class _CountedPipeline(aioredis.client.Pipeline):
    """A pipeline counted once per round trip (`chat_redis_calls_total{operation="pipeline"}`)."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        operation = "multi" if self.is_transaction else "pipeline"
        REDIS_CALLS.labels(operation).inc()
        try:
            return await super().execute(raise_on_error)
        except Exception:
            REDIS_ERRORS.labels(operation).inc()
            raise


class _CountedRedis(aioredis.Redis):
    """Every command and pipeline counted by operation, and its failures (the metrics the
    dashboard's Redis panel shows)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        operation = str(args[0]).lower() if args else "unknown"
        REDIS_CALLS.labels(operation).inc()
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except Exception:
            REDIS_ERRORS.labels(operation).inc()
            raise

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> aioredis.client.Pipeline:
        return _CountedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def make_redis(
    url: str,
    *,
    socket_timeout: float | None = 5.0,
    max_connections: int = 32,
    connect_timeout: float = 2.0,
    pool_timeout: float = 10.0,
    retries: int = 2,
) -> aioredis.Redis:
    """A client of `url` (bytes answers). Nothing connects until the first command.

    At most `max_connections` connections; a caller past them waits for one (a burst of 2,000
    sessions closing at once opened 2,000 connections and hit Redis's client limit). Two quick
    retries, not redis-py's ten: every caller (relay, reader, flusher) has its own retry loop,
    and a request that touches Redis (typing) should not hang through an outage."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.01), retries),
    )
    client: aioredis.Redis = _CountedRedis.from_pool(pool)  # closes the pool with the client
    return client
