from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.app import build_app
from common.db import make_engine
from common.logs import configure_logging
from private_chat_service.settings import PrivateChatSettings


def create_app(settings: PrivateChatSettings | None = None) -> FastAPI:
    settings = settings or PrivateChatSettings()
    configure_logging("private_chat", settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(
            settings.database_url, pool_size=settings.db_pool_size, application_name="private_chat"
        )
        yield
        await app.state.engine.dispose()

    return build_app(
        title="Private chat service",
        prefix="/private",
        description="One-to-one chats and their messages.",
        lifespan=lifespan,
    )
