from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI

from common.app import build_app
from common.db import make_engine, plain_database_url
from common.logs import configure_logging
from private_chat_service.routes import router
from private_chat_service.service import PrivateChatService
from private_chat_service.settings import PrivateChatSettings


def create_app(settings: PrivateChatSettings | None = None) -> FastAPI:
    settings = settings or PrivateChatSettings()
    configure_logging("private_chat", settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        engine = make_engine(
            settings.database_url, pool_size=settings.db_pool_size, application_name="private_chat"
        )
        app.state.engine = engine
        # min_size=0: connects on first use, like the SQLAlchemy pool (no start-up dependency).
        pool = await asyncpg.create_pool(
            plain_database_url(settings.database_url),
            min_size=0,
            max_size=settings.db_pool_size,
            server_settings={"application_name": "private_chat"},
        )
        app.state.service = PrivateChatService(engine, pool)
        try:
            yield
        finally:
            await pool.close()
            await engine.dispose()

    app = build_app(
        title="Private chat service",
        prefix="/private",
        description="One-to-one chats and their messages.",
        lifespan=lifespan,
        routers=[router],
    )
    return app
