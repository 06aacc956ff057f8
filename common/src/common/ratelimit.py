"""Per-user rate limits shared by every instance of a service: one atomic Redis script per check.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a
limit of `count` per `seconds` lets `count` requests through at once, then one every
`seconds / count`. Each bucket is one Redis string, the bucket's "theoretical arrival time" in
microseconds of Redis's own clock (`TIME`), so instances with skewed clocks agree and the check
and the update are one script: two instances never both take the last slot.

Keys: `chat:rl:<limit name>:<who>` (for example `chat:rl:send:<user id>:<chat id>`), each with a
TTL of the time until its bucket is full again: an idle user's bucket costs nothing.

When Redis cannot be reached (down, refusing, too slow), the request is allowed: a chat that keeps
working unthrottled for a while beats a chat that stops. Each refused attempt is counted
(`chat_rate_limit_unchecked_total`), logged at most once per `outage_log_seconds`, and for
`retry_seconds` afterwards requests are allowed without asking Redis, so an outage costs no
request a timeout.
"""

import logging
import math
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.metrics import RATE_LIMIT_REFUSALS, RATE_LIMIT_UNCHECKED

logger = logging.getLogger("common.ratelimit")

KEY_PREFIX = "chat:rl:"

# KEYS[1]: the bucket. ARGV[1]: the emission interval (µs between requests at the steady rate),
# ARGV[2]: the period (µs, count × emission interval). Answers {allowed (1/0), remaining,
# retry after (µs), reset after (µs: until the bucket is full again), now (µs since the epoch)}.
# Integers throughout (microseconds stay exact in a Lua double until the year 2255).
GCRA_SCRIPT = """
local emission = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local after = tat + emission
local allow_at = after - period
if allow_at > now then
  return {0, 0, allow_at - now, tat - now, now}
end
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000))
return {1, math.floor((now - allow_at) / emission), 0, after - now, now}
"""


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `seconds`."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> "Rate | None":
        """`<count>/<seconds>` (e.g. `5/5`), or `0` for no limit (None). Anything else: ValueError."""
        text = text.strip()
        if text == "0":
            return None
        count_text, slash, seconds_text = text.partition("/")
        try:
            count, seconds = int(count_text), float(seconds_text)
        except ValueError:
            count, seconds = 0, 0.0
        if not slash or count < 1 or not (0 < seconds <= 86_400 * 365) or not math.isfinite(seconds):
            raise ValueError(f"a rate limit is <count>/<seconds> (e.g. 5/5) or 0 for none, not {text!r}")
        return cls(count, seconds)

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}"


def rate_setting(text: str) -> str:
    """A settings validator: the text, once it parses (so a bad value stops the service at start)."""
    Rate.parse(text)
    return text


@dataclass(frozen=True, slots=True)
class Limit:
    """A named limit (`send`): its rate, and the opaque id clients see as X-RateLimit-Bucket."""

    name: str
    rate: Rate

    @property
    def emission_us(self) -> int:
        return max(1, round(self.rate.seconds * 1_000_000 / self.rate.count))

    @property
    def bucket(self) -> str:
        # Opaque to clients (they must not parse it); stable, and different for a changed rate.
        return f"{self.name}-{self.rate.count}-{self.rate.seconds:g}".replace(".", "_")

    def key(self, who: str) -> str:
        return f"{KEY_PREFIX}{self.name}:{who}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until a request can succeed (0 when allowed)
    reset_after: float  # seconds until the bucket is full again
    reset_at: float  # that moment, epoch seconds
    bucket: str
    checked: bool = True  # False: Redis could not be asked and the request was let through

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The X-RateLimit-* headers (API.md 21), as ASGI header pairs."""
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", f"{self.reset_at:.3f}".encode()),
            (b"x-ratelimit-reset-after", f"{self.reset_after:.3f}".encode()),
            (b"x-ratelimit-bucket", self.bucket.encode()),
        ]


def _seconds_up(microseconds: int) -> float:
    """Microseconds as seconds rounded up to the millisecond: waiting that long is always enough."""
    return math.ceil(microseconds / 1000) / 1000


class RateLimiter:
    """Checks limits against one Redis (the same for every instance)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        outage_log_seconds: float = 60.0,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.outage_log_seconds = outage_log_seconds
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._script = redis.register_script(GCRA_SCRIPT)
        self._unchecked_until = -math.inf  # no Redis call before then (an outage was seen)
        self._logged_at = -math.inf
        self._unchecked_since_log = 0
        self._in_outage = False

    async def check(self, limit: Limit, who: str) -> Decision:
        """Takes one request from `who`'s bucket of `limit` if there is room. Counts refusals."""
        now = self._clock()
        if now < self._unchecked_until:
            return self._unchecked(limit)
        try:
            answer: Any = await self._script(keys=[limit.key(who)], args=[limit.emission_us, _period(limit)])
            allowed, remaining, retry_us, reset_us, now_us = (int(value) for value in answer)
        except (RedisError, OSError) as exc:
            self._outage(exc)
            return self._unchecked(limit)
        if self._in_outage:
            self._in_outage = False
            logger.info(
                "rate limits are checked again: Redis answers",
                extra={"unchecked_requests": self._unchecked_since_log},
            )
            self._unchecked_since_log = 0
        decision = Decision(
            allowed=bool(allowed),
            limit=limit.rate.count,
            remaining=remaining,
            retry_after=_seconds_up(retry_us),
            reset_after=_seconds_up(reset_us),
            reset_at=(now_us + reset_us) / 1_000_000,
            bucket=limit.bucket,
        )
        if not decision.allowed:
            RATE_LIMIT_REFUSALS.labels(limit.name).inc()
        return decision

    def _outage(self, exc: BaseException) -> None:
        now = self._clock()
        self._unchecked_until = now + self.retry_seconds
        self._in_outage = True
        if now - self._logged_at >= self.outage_log_seconds:
            self._logged_at = now
            logger.warning(
                "rate limits unchecked: Redis unreachable, requests are allowed",
                extra={"error": repr(exc)[:300], "unchecked_requests": self._unchecked_since_log},
            )

    def _unchecked(self, limit: Limit) -> Decision:
        """Allowed without a check: answered as the first request of an empty bucket."""
        RATE_LIMIT_UNCHECKED.labels(limit.name).inc()
        self._unchecked_since_log += 1
        emission = limit.emission_us / 1_000_000
        return Decision(
            allowed=True,
            limit=limit.rate.count,
            remaining=limit.rate.count - 1,
            retry_after=0.0,
            reset_after=emission,
            reset_at=time.time() + emission,
            bucket=limit.bucket,
            checked=False,
        )


def _period(limit: Limit) -> int:
    return limit.emission_us * limit.rate.count


# ---- the headers on every answer of a limited route --------------------------------------------
STATE_KEY = "rate_limit_headers"


def remember_headers(state: MutableMapping[str, Any], decision: Decision) -> None:
    """Marks the request's answer, whatever it turns out to be, with the decision's headers
    (`state` is the request's scope state: `request.scope["state"]`)."""
    state[STATE_KEY] = decision.headers()


class RateLimitHeaders:
    """ASGI middleware: adds the headers a limit check left in the request's state to the answer,
    whether the route answered or an error handler did (a 429, a 404, a 503)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = state.get(STATE_KEY)
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
