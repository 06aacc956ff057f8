"""The gateway in process, on a real PostgreSQL built by the real migrations, with a signing key
of the test's own (the gateway holds only its public half).

TEST_DATABASE_URL points at an existing database; otherwise a throwaway private cluster is
started for the session (devstack's PrivatePostgres).
"""

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI

from devstack.migrations import migrate
from devstack.postgres import PrivatePostgres
from gateway.main import create_app
from gateway.settings import GatewaySettings

ISSUER = "chat-auth"
AUDIENCE = "chat-api"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    given = os.environ.get("TEST_DATABASE_URL")
    root = Path(tempfile.mkdtemp(prefix="gateway-tests-"))
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


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def claims() -> dict[str, str]:
    """The issuer and audience the gateway under test expects."""
    return {"issuer": ISSUER, "audience": AUDIENCE}


Mint = Callable[..., str]


@pytest.fixture(scope="session")
def mint(signing_key: Ed25519PrivateKey) -> Mint:
    """A token as the auth service signs it; any claim can be overridden (None leaves it out)."""

    def make(user_id: int = 7, *, key: Ed25519PrivateKey | None = None, **overrides: object) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": str(user_id),
            "iat": now,
            "exp": now + 600,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        present = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(present, key or signing_key, algorithm="EdDSA")

    return make


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
def settings(database_url: str, signing_key: Ed25519PrivateKey) -> Callable[..., GatewaySettings]:
    def make(**overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "WARNING",
            "jwt_public_key": public_pem(signing_key),
            "TOKEN_ISSUER": ISSUER,
            "TOKEN_AUDIENCE": AUDIENCE,
            **overrides,
        }
        return GatewaySettings(**values)

    return make


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app, its lifespan running."""
    async with app.router.lifespan_context(app) as state:
        # What uvicorn does for every request: hand it a copy of the lifespan's state.
        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


Gateway = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def gateway(settings: Callable[..., GatewaySettings]) -> Gateway:
    """Starts a gateway made from the test settings (plus overrides)."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return running(create_app(settings(**overrides)))

    return start
