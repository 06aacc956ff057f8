"""Engine construction and the dependency that hands a route the service's engine.

Routes open their own transaction (`async with engine.begin()`), so a write is committed before
the response is built: a 2xx always means the data is durable.
"""

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.settings import async_database_url


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "chat") -> AsyncEngine:
    return create_async_engine(
        async_database_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": application_name}},
    )


def plain_database_url(url: str) -> str:
    """The URL as asyncpg itself takes it (for a service's plain asyncpg pool on a hot path)."""
    return async_database_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def get_engine(request: Request) -> AsyncEngine:  # async: no worker-thread hop
    engine: AsyncEngine = request.app.state.engine
    return engine


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
