"""The limiter's script against a real Redis server (a private one per test module), and what the
limiter does when Redis cannot be reached."""

import asyncio
import logging
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from common.events import make_redis
from common.metrics import RATE_LIMIT_REFUSALS, RATE_LIMIT_UNCHECKED
from common.ratelimit import Decision, Limit, Rate, RateLimiter
from devstack.config import free_port
from devstack.redis import redis_ping
from devstack.system import find_redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ratelimit-redis-") as folder:
        server = subprocess.Popen(
            [str(find_redis_server()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not redis_ping(port):
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = make_redis(redis_url, socket_timeout=1.0)
    yield client
    await client.aclose()


_names = iter(range(10**9))


def who() -> str:
    """A fresh bucket per test."""
    return f"t{time.time_ns()}-{next(_names)}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5/5", Rate(5, 5.0)), ("10/60", Rate(10, 60.0)), (" 3/0.5 ", Rate(3, 0.5)), ("0", None)],
)
def test_rates_parse(text: str, expected: Rate | None) -> None:
    assert Rate.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "5", "5/", "/5", "0/5", "-1/5", "5/0", "5/-1", "a/b", "5/inf", "5/nan", "1.5/2"]
)
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        Rate.parse(text)


async def test_a_burst_of_count_then_one_per_interval(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limit = Limit("unit", Rate(5, 1.0))  # 5 at once, then one every 0.2 s
    key = who()
    refused_before = RATE_LIMIT_REFUSALS.labels("unit")._value.get()
    burst = [await limiter.check(limit, key) for _ in range(5)]
    assert [d.allowed for d in burst] == [True] * 5
    assert [d.remaining for d in burst] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.checked for d in burst)
    # The bucket fills back at 0.2 s a request: full again about 1 s after the burst.
    assert 0.9 < burst[-1].reset_after <= 1.0
    assert abs(burst[-1].reset_at - (time.time() + burst[-1].reset_after)) < 0.5
    refused = await limiter.check(limit, key)
    assert not refused.allowed
    assert refused.remaining == 0
    assert 0 < refused.retry_after <= 0.2
    assert RATE_LIMIT_REFUSALS.labels("unit")._value.get() == refused_before + 1
    # Nothing was taken by the refusal: after retry_after exactly one more goes through.
    await asyncio.sleep(refused.retry_after)
    assert (await limiter.check(limit, key)).allowed
    assert not (await limiter.check(limit, key)).allowed
    # Each key is its own bucket.
    assert (await limiter.check(limit, who())).remaining == 4


async def test_the_bucket_key_expires_once_full_again(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limit = Limit("unit", Rate(2, 1.0))
    key = who()
    await limiter.check(limit, key)
    ttl = await redis.pttl(limit.key(key))
    assert 0 < ttl <= 500  # one request of two per second: full again in 0.5 s


async def test_racing_checks_take_exactly_the_limit(redis_url: str) -> None:
    """Two limiters (two instances) with their own clients, 60 checks at once: exactly 10 pass."""
    clients = [make_redis(redis_url, socket_timeout=2.0) for _ in range(2)]
    try:
        limiters = [RateLimiter(client) for client in clients]
        limit = Limit("unit", Rate(10, 60.0))
        key = who()
        decisions = await asyncio.gather(*(limiters[i % 2].check(limit, key) for i in range(60)))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
    # The 11th would come 6 s after the first: every refusal says so (to the millisecond).
    assert all(5.9 < d.retry_after <= 6.0 for d in decisions if not d.allowed)


async def test_the_script_is_loaded_again_after_redis_forgets_it(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limit = Limit("unit", Rate(3, 10.0))
    key = who()
    assert (await limiter.check(limit, key)).remaining == 2
    await redis.script_flush()  # what a Redis restart does
    assert (await limiter.check(limit, key)).remaining == 1


async def test_unreachable_redis_allows_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on the port: every check is allowed, counted as unchecked, logged once per
    interval, and within retry_seconds of a failure Redis is not even asked."""
    client = make_redis(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, connect_timeout=0.2, retries=0
    )
    now = [1000.0]
    limiter = RateLimiter(client, outage_log_seconds=60, retry_seconds=1, clock=lambda: now[0])
    limit = Limit("unit_outage", Rate(1, 60.0))
    unchecked_before = RATE_LIMIT_UNCHECKED.labels("unit_outage")._value.get()
    calls = 0
    original = limiter._script

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    limiter._script = counted  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.INFO, logger="common.ratelimit"):
            decisions: list[Decision] = []
            for step in range(30):  # 3 s of requests, 10 a second, all from one user
                now[0] = 1000.0 + step * 0.1
                decisions.append(await limiter.check(limit, "one user"))
            now[0] = 1070.0  # past the log interval: logged again
            decisions.append(await limiter.check(limit, "one user"))
    finally:
        await client.aclose()
    assert all(d.allowed and not d.checked for d in decisions)
    # Answered as the first request of an empty bucket.
    assert {(d.limit, d.remaining) for d in decisions} == {(1, 0)}
    assert RATE_LIMIT_UNCHECKED.labels("unit_outage")._value.get() == unchecked_before + 31
    assert calls == 4  # at 0, 1.0, 2.0 s and after the interval: once per retry_seconds
    warnings = [r for r in caplog.records if "rate limits unchecked" in r.getMessage()]
    assert len(warnings) == 2
