from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.app import build_app
from common.db import make_engine
from common.health import Readiness, engine_check
from common.logs import configure_logging
from common.metrics import sampling_pool, sqlalchemy_pool_stats
from users_service.dependencies import State
from users_service.routes import internal, router
from users_service.service import UsersService
from users_service.settings import UsersSettings
from users_service.storage import open_storage


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()
    configure_logging("users", settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            application_name="users",
            connect_timeout=settings.db_connect_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
        )
        try:
            storage = await open_storage(settings)
            try:
                async with sampling_pool(sqlalchemy_pool_stats(engine)):
                    yield {
                        "service": UsersService(engine, storage, settings),
                        "readiness": Readiness(database=engine_check(engine)),
                    }
            finally:
                await storage.close()
        finally:
            await engine.dispose()

    return build_app(
        title="Users service",
        prefix="/users",
        description="Profiles, username search and avatars.",
        lifespan=lifespan,
        settings=settings,
        routers=[router, internal],
    )
