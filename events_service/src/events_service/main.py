import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI

from common.access import AccessCheck, RememberedSignatures
from common.app import build_app
from common.db import close_pool, make_pool
from common.events import make_redis
from common.health import Readiness, database_check
from common.logs import configure_logging
from common.metrics import asyncpg_pool_stats, sampling_pool
from common.tokens import TokenVerifier, load_public_key
from events_service.dependencies import State
from events_service.gateway import Gateway
from events_service.hub import READ_BLOCK_MS, Hub
from events_service.records import Records
from events_service.routes import internal_router, router
from events_service.settings import EventsSettings

SignalHandler = Callable[[int, FrameType | None], Any]


def drain_on_stop(hub: Hub, seconds: float) -> None:
    """uvicorn fails every websocket with 1012 as soon as it starts stopping; before it does, a
    stopping instance sends RECONNECT (op 7) to its sessions and gives the frames `seconds` to
    leave, so clients resume elsewhere at once. The server's own signal handler then runs."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only (an app under a test client)
    loop = asyncio.get_running_loop()

    def start(signum: int, previous: SignalHandler) -> None:
        if hub.draining:
            previous(signum, None)
            return
        task = loop.create_task(hub.drain(seconds))
        task.add_done_callback(lambda _: previous(signum, None))

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(number: int, frame: FrameType | None, previous: SignalHandler = previous) -> None:
            loop.call_soon_threadsafe(start, number, previous)

        signal.signal(signum, handler)


def create_app(settings: EventsSettings | None = None) -> FastAPI:
    settings = settings or EventsSettings()
    configure_logging("events", settings.log_level, settings.log_format)
    verifier = TokenVerifier(
        load_public_key(settings.public_key_pem()),
        issuer=settings.token_issuer,
        audience=settings.token_audience,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        pool = await make_pool(
            settings.database_url,
            size=settings.db_pool_size,
            application_name="events",
            connect_timeout=settings.db_connect_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            reads_only=True,  # single SELECTs only (any other statement is refused)
        )
        redis = make_redis(settings.redis_url)
        # The reader blocks in XREAD up to READ_BLOCK_MS: its own connection, a longer timeout.
        reader_redis = make_redis(settings.redis_url, socket_timeout=READ_BLOCK_MS / 1000 + 5)
        records = Records(redis, resume_window_seconds=settings.resume_window_seconds)
        access = AccessCheck(RememberedSignatures(verifier), pool if settings.check_revocation else None)
        hub = Hub(
            redis=redis,
            reader_redis=reader_redis,
            records=records,
            access=access,
            queue_limit=settings.session_queue_limit,
            retention_ms=settings.retention_ms,
            revocation_poll_seconds=settings.revocation_poll_seconds,
        )
        hub.start()
        drain_on_stop(hub, settings.drain_seconds)
        try:
            async with sampling_pool(asyncpg_pool_stats(pool)):
                yield {
                    "readiness": Readiness(database=database_check(pool), redis=redis.ping),
                    "gateway": Gateway(settings, hub=hub, access=access, records=records, pool=pool),
                    "hub": hub,
                }
        finally:
            await hub.stop()
            await redis.aclose()
            await reader_redis.aclose()
            await close_pool(pool)

    return build_app(
        title="Events gateway",
        prefix="/events",
        description="The realtime event gateway: a websocket at /events/ (API.md 20).",
        lifespan=lifespan,
        settings=settings,
        routers=[router, internal_router],
    )
