"""End-to-end fixtures: one real stack per test session (PostgreSQL, Redis, two instances of
every service, nginx), supervised as `make run` supervises it.

Tests talk to it through nginx only, as a client would. `db` gives a direct connection for
checking what was (or was not) written.
"""

import importlib.util
import itertools
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trusted
from polite_client import post_retrying

from devstack import Stack, StackConfig
from devstack.stack import StackError


def _load_fake_yandex() -> Any:
    # Loaded by path, so it does not depend on pytest's import mode putting tests/ on sys.path.
    spec = importlib.util.spec_from_file_location("fake_yandex", Path(__file__).with_name("fake_yandex.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_yandex"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fake_yandex() -> Iterator[Any]:
    """The stand-in for the Yandex ID API that the stack's auth service asks (tests/fake_yandex.py)."""
    server = _load_fake_yandex().FakeYandex()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(fake_yandex: Any) -> Iterator[Stack]:
    data_dir = Path(tempfile.mkdtemp(prefix="chat-e2e-"))
    data_dir.chmod(0o755)
    env = {
        "LOG_LEVEL": "INFO",
        # Housekeeping runs often so the crash-recovery test need not wait a minute.
        "AUTH_HOUSEKEEPING_INTERVAL_SECONDS": "1",
        # The event gateway's timers, short so that each rule's test takes seconds
        # (tests/test_events.py; the defaults are API.md's, pinned by a unit test).
        "EVENTS_HEARTBEAT_INTERVAL_MS": "3000",
        "EVENTS_IDENTIFY_TIMEOUT_SECONDS": "4",
        "EVENTS_RESUME_WINDOW_SECONDS": "6",
        "EVENTS_SESSION_QUEUE_LIMIT": "50",
        # The rate limits (API.md 21) checked on every send and start-chat, but high enough that
        # the suite's loads (wrk, the outage trickles, the kill-under-load workers) never meet
        # them. tests/test_rate_limits.py restarts the chat instances with the defaults.
        "SEND_RATE_LIMIT": "100000/1",
        "START_CHAT_RATE_LIMIT": "100000/1",
    }
    config = StackConfig.for_tests(data_dir, env=env)
    config.env.update(fake_yandex.stack_env())
    running = Stack(config)
    try:
        running.start()
    except StackError as exc:
        logs = "\n".join(f"--- {name}\n{running.tail_log(name)}" for name in ("auth1", "users1", "gateway1"))
        pytest.fail(f"stack did not start: {exc}\n{logs}", pytrace=False)
    trusted.SECRETS.update(edge=running.edge_secret, service=running.service_secret)
    yield running
    running.stop()
    if not os.environ.get("KEEP_TEST_DATA"):
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def base_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.config.http_port}"


@pytest.fixture
async def api(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    assert stack.database_url
    dsn = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


_counter = itertools.count()


def unique(prefix: str = "u") -> str:
    """A fresh, valid username (and email local part)."""
    return f"{prefix}{next(_counter)}_{uuid.uuid4().hex[:8]}"


@dataclass
class User:
    id: int
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MakeUser = Callable[..., Awaitable[User]]


@pytest.fixture
def make_user(api: httpx.AsyncClient) -> MakeUser:
    async def make(username: str | None = None, password: str = "correct horse battery") -> User:
        username = username or unique()
        email = f"{username}@example.com"
        registered = await post_retrying(
            api, "/auth/register/", json={"username": username, "email": email, "password": password}
        )
        assert registered.status_code == 200, registered.text
        login = await post_retrying(api, "/auth/login/", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        me = await api.get("/users/me/", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        return User(me.json()["id"], username.lower(), email, password, token)

    return make


@pytest.fixture(scope="session")
def instances(stack: Stack) -> dict[str, str]:
    """Each websocket instance's loopback URL, for its internal stats (nginx never routes them)."""
    return {f"qr{index + 1}": f"http://127.0.0.1:{port}" for index, port in enumerate(stack.config.qr_ports)}


@pytest.fixture
def ws_url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.config.http_port}/auth_events/qr_auth/"
