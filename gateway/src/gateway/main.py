from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware

from common.access import AccessCheck, RememberedSignatures
from common.app import build_app
from common.db import close_pool, make_pool
from common.health import Readiness, database_check
from common.logs import configure_logging
from common.metrics import asyncpg_pool_stats, sampling_pool
from common.tokens import TokenVerifier, load_public_key
from gateway.dependencies import State
from gateway.fast_path import FastTokenCheck
from gateway.routes import TOKEN_PATH, router
from gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
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
            application_name="gateway",
            connect_timeout=settings.db_connect_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            reads_only=True,  # single SELECTs only (any other statement is refused)
        )
        try:
            revocations = pool if settings.check_revocation else None
            async with sampling_pool(asyncpg_pool_stats(pool)):
                yield {
                    "access": AccessCheck(RememberedSignatures(verifier), revocations),
                    "readiness": Readiness(database=database_check(pool)),
                }
        finally:
            await close_pool(pool)

    app = build_app(
        title="Gateway",
        prefix="/gateway",
        description="Verifies access tokens for nginx's auth_request.",
        lifespan=lifespan,
        routers=[router],
        settings=settings,
        middleware=[Middleware(FastTokenCheck, path=TOKEN_PATH)],
    )
    return app
