"""Prometheus metrics: every service answers `/metrics` on its own loopback port (nginx never
routes it). One definition of each metric, here, for every service and the dashboard.

The metric objects are module-level declarations, as prometheus_client intends (they hold no
connection; a registry refuses the same name twice, so they cannot be made per app). When a
service runs several worker processes, devstack sets PROMETHEUS_MULTIPROC_DIR (one folder per
instance, emptied at start) and `/metrics` adds up every worker's samples.

Label values never come from a client: routes are the matched route's template
(`/private/{chat_id}/messages`), anything unmatched is `unmatched`.
"""

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets from 1 ms to 10 s: the hot routes answer in a few ms, a sign-up in ~100 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# ---- every HTTP service (RED) --------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "chat_http_requests_total",
    "HTTP requests answered, by route template and status",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "chat_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
# ---- database pools ----------------------------------------------------------------------------
DB_POOL_CONNECTIONS = Gauge(
    "chat_db_pool_connections",
    "Connections of this process's database pool: in_use, idle, max",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "chat_db_pool_waiting",
    "Requests waiting for a database connection",
    multiprocess_mode="livesum",
)
# ---- Redis ------------------------------------------------------------------------------------
REDIS_CALLS = Counter("chat_redis_calls_total", "Redis calls made, by operation", ["operation"])
REDIS_ERRORS = Counter("chat_redis_errors_total", "Redis calls that failed, by operation", ["operation"])
# ---- websockets --------------------------------------------------------------------------------
WEBSOCKET_SESSIONS = Gauge(
    "chat_websocket_sessions",
    "Open websocket sessions, by kind (qr_hub_client, events)",
    ["kind"],
    multiprocess_mode="livesum",
)
# ---- events ------------------------------------------------------------------------------------
EVENTS_PUBLISHED = Counter("chat_events_published_total", "Events the relay published to Redis", ["event"])
EVENTS_DELIVERED = Counter("chat_events_delivered_total", "Events sent to event-gateway sessions", ["event"])
OUTBOX_LAG = Gauge(
    "chat_outbox_lag_seconds",
    "Age of the oldest outbox row not yet published (0 when the outbox is empty)",
    multiprocess_mode="max",
)
FANOUT_LATENCY = Histogram(
    "chat_events_fanout_seconds",
    "From the change's commit to the event written to a session's socket",
    buckets=LATENCY_BUCKETS,
)
# ---- limits and log-ins -----------------------------------------------------------------------
RATE_LIMIT_REFUSALS = Counter(
    "chat_rate_limit_refusals_total", "Requests refused with 429, by bucket", ["bucket"]
)
RATE_LIMIT_UNCHECKED = Counter(
    "chat_rate_limit_unchecked_total",
    "Requests of a limited route let through unchecked because Redis could not be reached, by bucket",
    ["bucket"],
)
LOGIN_FAILURES = Counter("chat_login_failures_total", "Failed log-ins (wrong or unknown credentials)")
LOGIN_BRAKE_HITS = Counter("chat_login_brake_hits_total", "Log-ins refused by the per-email brake")
PASSWORD_HASHING = Gauge(
    "chat_password_hashing",
    "argon2 hashes being computed (running) or queued for a worker (waiting)",
    ["state"],
    multiprocess_mode="livesum",
)
# ---- avatars ------------------------------------------------------------------------------------
AVATAR_PROCESSING = Histogram(
    "chat_avatar_processing_seconds",
    "Decoding, checking and re-encoding one uploaded avatar",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def metrics_response(request: Request) -> Response:
    registry: Any = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times every HTTP request by the template of the route that answered it."""

    def __init__(
        self, app: ASGIApp, *, skip: frozenset[str] = frozenset({"/metrics", "/healthz", "/readyz"})
    ):
        self.app = app
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(template, method, str(status)).inc()
            HTTP_DURATION.labels(template, method).observe(time.perf_counter() - started)


PoolStats = Callable[[], tuple[int, int, int, int]]


def asyncpg_pool_stats(pool: Any) -> PoolStats:
    """(in use, idle, max, waiting) of an asyncpg pool. Waiting is read from the pool's queue of
    waiters (asyncpg keeps no public count); 0 if that ever changes."""

    def stats() -> tuple[int, int, int, int]:
        size, idle = pool.get_size(), pool.get_idle_size()
        waiting = len(getattr(getattr(pool, "_queue", None), "_getters", ()) or ())
        return size - idle, idle, pool.get_max_size(), waiting

    return stats


def sqlalchemy_pool_stats(engine: Any) -> PoolStats:
    """(in use, idle, max, waiting) of an async engine's QueuePool (waiting is not exposed: 0)."""

    def stats() -> tuple[int, int, int, int]:
        pool = engine.pool
        return pool.checkedout(), pool.checkedin(), pool.size(), 0

    return stats


@contextlib.asynccontextmanager
async def sampling_pool(stats: PoolStats, interval: float = 2.0) -> AsyncIterator[None]:
    """Samples a pool's gauges every `interval` seconds while the app runs (each worker process
    samples its own pool; /metrics adds them up)."""

    async def sample() -> None:
        while True:
            in_use, idle, maximum, waiting = stats()
            DB_POOL_CONNECTIONS.labels("in_use").set(in_use)
            DB_POOL_CONNECTIONS.labels("idle").set(idle)
            DB_POOL_CONNECTIONS.labels("max").set(maximum)
            DB_POOL_WAITING.set(waiting)
            await asyncio.sleep(interval)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
