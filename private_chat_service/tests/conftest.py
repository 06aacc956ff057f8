"""A real PostgreSQL for service-level tests, built by the real migrations.

TEST_DATABASE_URL points at an existing database; otherwise a throwaway private cluster is
started for the session (devstack's PrivatePostgres).
"""

import itertools
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from common.db import close_pool, make_pool
from devstack.config import free_port
from devstack.migrations import migrate
from devstack.postgres import PrivatePostgres
from private_chat_service.main import create_app
from private_chat_service.service import PrivateChatService
from private_chat_service.settings import PrivateChatSettings


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    given = os.environ.get("TEST_DATABASE_URL")
    root = Path(tempfile.mkdtemp(prefix="private-chat-tests-"))
    root.chmod(0o755)
    postgres = None
    try:
        if given:
            url = given
        else:
            postgres = PrivatePostgres(root / "postgres", for_tests=True)
            url = postgres.start()
        migrate(url)
        yield url
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def raw(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    yield conn
    await conn.close()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI (no nginx): X-User-Id is whatever a test sends."""
    # Rate limits off: these tests are about the routes (the limits are tested through nginx,
    # tests/test_rate_limits.py, and against Redis, common/tests/test_ratelimit.py).
    # No relay and no Redis of the machine's: these tests check the outbox rows themselves, and a
    # Redis on the default port belongs to whoever runs it (a closed port: typing's publish fails
    # fast and the route answers as it does with Redis down).
    settings = PrivateChatSettings(
        DATABASE_URL=database_url,
        LOG_LEVEL="WARNING",
        SEND_RATE_LIMIT="0",
        START_CHAT_RATE_LIMIT="0",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        relay_enabled=False,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        # What uvicorn does for every request: hand it a copy of the lifespan's state.
        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://private-chat") as http:
            yield http


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[PrivateChatService]:
    pool = await make_pool(database_url, size=20, application_name="private_chat_tests")
    yield PrivateChatService(pool)
    await close_pool(pool)


# Random per session, so runs against a kept TEST_DATABASE_URL do not collide.
_ids = itertools.count(10**12 + secrets.randbelow(10**6) * 10**4)


@pytest.fixture
def new_user(raw: asyncpg.Connection):  # type: ignore[no-untyped-def]
    """Creates a profile the way the users service would (test setup only) and returns its id."""

    async def make(avatar_url: str | None = None) -> int:
        user_id = next(_ids)
        await raw.execute(
            "INSERT INTO users.users (id, username, avatar_url) VALUES ($1, $2, $3)",
            user_id,
            f"pc{user_id}",
            avatar_url,
        )
        return user_id

    return make
