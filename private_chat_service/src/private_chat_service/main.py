import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.app import build_app
from common.db import close_pool, make_pool
from common.errors import check_before_validation_errors
from common.events import EventPublisher, make_redis
from common.health import Readiness, database_check
from common.logs import configure_logging
from common.metrics import asyncpg_pool_stats, sampling_pool
from common.periodic import run_periodically
from common.ratelimit import RateLimiter, RateLimitHeaders
from private_chat_service.dependencies import State
from private_chat_service.limits import ChatLimits, check_refused_request
from private_chat_service.relay import Relay
from private_chat_service.routes import router
from private_chat_service.service import PrivateChatService
from private_chat_service.settings import PrivateChatSettings


def create_app(settings: PrivateChatSettings | None = None) -> FastAPI:
    settings = settings or PrivateChatSettings()
    configure_logging("private_chat", settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        pool = await make_pool(
            settings.database_url,
            size=settings.db_pool_size,
            application_name="private_chat",
            connect_timeout=settings.db_connect_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
        )
        redis = make_redis(settings.redis_url, socket_timeout=2.0)
        publisher = EventPublisher(redis, dedupe_seconds=settings.relay_dedupe_seconds)
        relay = Relay(
            pool, publisher, batch_size=settings.relay_batch_size, poll_seconds=settings.relay_poll_seconds
        )
        if settings.relay_enabled:
            relay.start()
        service = PrivateChatService(pool, events=publisher, outbox_written=relay.wake)
        # The limiter's own client: short timeouts and one retry, so that an unreachable Redis
        # costs a request little before it is let through (common.ratelimit).
        limiter_redis = make_redis(
            settings.redis_url,
            socket_timeout=settings.rate_limit_redis_timeout_seconds,
            connect_timeout=settings.rate_limit_redis_timeout_seconds,
            pool_timeout=settings.rate_limit_redis_timeout_seconds,
            max_connections=64,
            retries=1,
        )
        limits = ChatLimits(
            RateLimiter(
                limiter_redis,
                outage_log_seconds=settings.rate_limit_outage_log_seconds,
                retry_seconds=settings.rate_limit_retry_seconds,
            ),
            send=settings.send_limit,
            start_chat=settings.start_chat_limit,
        )
        # A plain task, not a task group: the lifespan may be entered and left in different tasks
        # (test clients do), which a task group's cancel scope refuses.
        sweeper = asyncio.create_task(
            run_periodically(service.sweep_nonces, settings.nonce_sweep_interval_seconds, "nonce sweep")
        )
        try:
            async with sampling_pool(asyncpg_pool_stats(pool)):
                yield {
                    "service": service,
                    "limits": limits,
                    "readiness": Readiness(database=database_check(pool)),
                }
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await relay.stop()
            await limiter_redis.aclose()
            await redis.aclose()
            await close_pool(pool)

    app = build_app(
        title="Private chat service",
        prefix="/private",
        description="One-to-one chats and their messages.",
        lifespan=lifespan,
        settings=settings,
        routers=[router],
    )
    app.add_middleware(RateLimitHeaders)
    check_before_validation_errors(app, check_refused_request)
    return app
