"""How services connect to PostgreSQL.

Which access path a service uses, and why (one path per service, one pool per process sized by
`DB_POOL_SIZE`):
- SQLAlchemy Core on an async engine (`make_engine`): the auth and users services, whose routes
  are cold (a log-in costs an argon2 hash; an avatar, an image decode) and whose statements read
  best built from the table definitions their migrations share.
- Plain asyncpg with SQL text (`make_pool`): the chat service, the gateway and the events service,
  whose routes are the hot paths. SQLAlchemy's statement building and result processing was about
  a third of the chat service's CPU per send in profiles; their SQL lives in one repository module
  per service and is checked by plan tests.
No service uses the ORM's unit of work: every statement is written out, in a repository module.
"""

from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.settings import async_database_url


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "chat") -> AsyncEngine:
    """A SQLAlchemy engine whose pool holds at most `pool_size` connections."""
    return create_async_engine(
        async_database_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_recycle=1800,
        # A connection that died while pooled (a database restart) is replaced before use.
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": application_name}},
    )


def plain_database_url(url: str) -> str:
    """The URL as asyncpg itself takes it."""
    return async_database_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def make_pool(url: str, *, size: int, application_name: str) -> asyncpg.Pool:
    """An asyncpg pool of at most `size` connections. min_size=0: it connects on first use, so a
    service starts (and answers its liveness check) before the database does."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        plain_database_url(url),
        min_size=0,
        max_size=size,
        server_settings={"application_name": application_name},
    )
    return pool


class Executor(Protocol):
    """An asyncpg pool, or one of its connections (inside a transaction): both run a statement."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: object) -> Any: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...
