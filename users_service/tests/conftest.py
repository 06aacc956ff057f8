"""The users service in process, on a real PostgreSQL built by the real migrations, with avatars in
a local folder.

TEST_DATABASE_URL points at an existing database; otherwise a throwaway private cluster is
started for the session (devstack's PrivatePostgres).
"""

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.migrations import migrate
from devstack.postgres import PrivatePostgres
from users_service.main import create_app
from users_service.settings import UsersSettings


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    given = os.environ.get("TEST_DATABASE_URL")
    root = Path(tempfile.mkdtemp(prefix="users-tests-"))
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
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = UsersSettings(DATABASE_URL=database_url, LOG_LEVEL="WARNING", media_root=tmp_path / "media")
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        # What uvicorn does for every request: hand it a copy of the lifespan's state.
        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://users") as http:
            yield http
