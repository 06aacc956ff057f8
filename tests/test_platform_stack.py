"""The stack as an operator meets it: a private Redis, every service in two instances behind nginx,
an instance stopped or killed under load, the supervisor bringing a crashed one back, a rolling
restart under load, and the first-run checks (ports taken, a running stack, a clone in a 0700
home)."""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import trusted

from devstack import Stack, StackConfig
from devstack.__main__ import banner
from devstack.config import SERVICES, free_port
from devstack.errors import StackError
from devstack.redis import redis_ping
from devstack.stack import backoff_delay, read_state

REPO_ROOT = Path(__file__).resolve().parents[1]


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def wait_for(condition: Any, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Load:
    """A steady mix of page reads and plain sends (no nonce) through nginx, from a few clients."""

    base_url: str
    headers: dict[str, str]
    chat_id: int
    tag: str
    workers: int = 6
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    gets: int = 0
    posts: int = 0
    failures: list[str] = field(default_factory=list)
    get_failures: int = 0
    sent: list[str] = field(default_factory=list)  # texts of sends answered 200
    failed_sends: list[str] = field(default_factory=list)

    async def _worker(self, index: int) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                if n % 2:
                    try:
                        response = await client.get(f"/private/{self.chat_id}/messages/", params={"limit": 5})
                        status = str(response.status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    self.gets += 1
                    if status != "200":
                        self.get_failures += 1
                        self.failures.append(f"GET {status}")
                else:
                    text = f"{self.tag} {index} {n}"
                    try:
                        response = await client.post(
                            f"/private/add-message/{self.chat_id}/", json={"text": text}
                        )
                        status = str(response.status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    self.posts += 1
                    if status == "200":
                        self.sent.append(text)
                    else:
                        self.failed_sends.append(text)
                        self.failures.append(f"POST {status}")

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(i) for i in range(self.workers)))

    async def until(self, count: int) -> None:
        while self.gets + self.posts < count:
            await asyncio.sleep(0.05)


async def new_chat(api: httpx.AsyncClient, make_user: Any) -> tuple[Any, int]:
    alice, bob = await make_user(), await make_user()
    response = await api.post("/private/start-chat/", json={"recipient_id": bob.id}, headers=alice.headers)
    assert response.status_code == 200, response.text
    return alice, response.json()["chat_id"]


async def stored_texts(db: asyncpg.Connection, chat_id: int, tag: str) -> list[str]:
    rows = await db.fetch(
        "SELECT text FROM private_chat.messages WHERE chat_id = $1 AND text LIKE $2", chat_id, f"{tag} %"
    )
    return [row["text"] for row in rows]


# ---- Redis --------------------------------------------------------------------------------------
async def test_a_private_redis_reaches_every_instance(stack: Stack) -> None:
    assert stack.redis is not None
    assert stack.redis.port != 6379
    assert stack.redis_url == f"redis://127.0.0.1:{stack.redis.port}/0"
    conf = stack.redis.config_file.read_text()
    assert "appendonly yes" in conf
    assert "bind 127.0.0.1" in conf
    assert stack.redis.root == stack.config.data_dir / "redis"
    for name, process in stack.processes.items():
        if name in ("nginx", "redis"):
            continue
        env = environ_of(process.pid)
        assert env["REDIS_URL"] == stack.redis_url, name
        assert env["INSTANCE_ID"] == name
    client = aioredis.from_url(stack.redis_url)
    try:
        assert await client.set("chat:test:kept", "across a restart")
    finally:
        await client.aclose()


async def test_redis_stops_and_starts_keeping_its_data(stack: Stack) -> None:
    assert stack.redis is not None
    client = aioredis.from_url(stack.redis_url)
    try:
        await client.set("chat:test:persisted", "yes")
    finally:
        await client.aclose()
    await asyncio.to_thread(stack.stop_redis)
    try:
        assert not redis_ping(stack.redis.port)
    finally:
        await asyncio.to_thread(stack.start_redis)
    assert redis_ping(stack.redis.port)
    client = aioredis.from_url(stack.redis_url)
    try:
        assert await client.get("chat:test:persisted") == b"yes"  # appendonly: written on shutdown
    finally:
        await client.aclose()


# ---- instances ------------------------------------------------------------------------------------
def test_every_service_runs_two_instances_behind_nginx(stack: Stack) -> None:
    conf = (stack.config.data_dir / "nginx" / "nginx.conf").read_text()
    for spec in stack.config.services():
        names = stack.instances_of(spec.name)
        assert names == [f"{spec.name}1", f"{spec.name}2"]
        for name in names:
            assert name in stack.processes
            assert healthy(stack.instance_url(name)), name
            # The QR hubs' hashed upstream never takes an instance out (a hub must not split).
            check = "max_fails=0" if spec.balance else "max_fails=1"
            assert f"server 127.0.0.1:{stack.config.ports[name]} {check}" in conf
        assert f"upstream {spec.upstream} {{" in conf
    # Absent optional services have neither an upstream nor a location.
    for spec in SERVICES:
        if not spec.available():
            assert f"upstream {spec.upstream}" not in conf
            assert not (stack.config.data_dir / "nginx" / "locations" / f"{spec.name}.conf").exists()


async def test_requests_reach_both_instances(stack: Stack, api: httpx.AsyncClient, make_user: Any) -> None:
    user = await make_user()
    log = stack.config.data_dir / "nginx" / "logs" / "access.log"
    before = log.stat().st_size
    for _ in range(20):
        assert (await api.get("/private/chat-list/", headers=user.headers)).status_code == 200
    with log.open() as file:
        file.seek(before)
        upstreams = file.read()
    for name in stack.instances_of("private_chat"):
        assert f"127.0.0.1:{stack.config.ports[name]}" in upstreams


async def test_a_stopped_instance_is_skipped_without_errors(
    stack: Stack, api: httpx.AsyncClient, make_user: Any
) -> None:
    user, chat_id = await new_chat(api, make_user)
    await asyncio.to_thread(stack.stop_service, "private_chat1")
    try:
        answers = await asyncio.gather(
            *(api.get(f"/private/{chat_id}/messages/", headers=user.headers) for _ in range(40))
        )
        failed = [r.text for r in answers if r.status_code != 200]
        assert [r.status_code for r in answers] == [200] * 40, failed
        # Sends too: a refused connection never reached an instance, so nginx may try the other.
        sends = [
            await api.post(
                f"/private/add-message/{chat_id}/", json={"text": f"while down {i}"}, headers=user.headers
            )
            for i in range(10)
        ]
        assert [r.status_code for r in sends] == [200] * 10
    finally:
        await asyncio.to_thread(stack.start_service, "private_chat1")


async def test_an_instance_killed_under_load_loses_no_read_and_doubles_no_send(
    stack: Stack, base_url: str, api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    user, chat_id = await new_chat(api, make_user)
    load = Load(base_url, user.headers, chat_id, tag="kill")
    error_log = stack.config.data_dir / "nginx" / "logs" / "error.log"
    running = asyncio.create_task(load.run())
    try:
        await load.until(100)
        log_start = error_log.stat().st_size
        old = stack.processes["private_chat2"].pid
        await asyncio.to_thread(stack.kill_instance, "private_chat2")
        await load.until(load.gets + load.posts + 200)
        # The supervisor brings it back by itself, and the load carries on.
        await wait_for(
            lambda: (
                stack.processes["private_chat2"].pid != old and healthy(stack.instance_url("private_chat2"))
            ),
            what="private_chat2 to come back",
        )
        await load.until(load.gets + load.posts + 100)
    finally:
        load.stop.set()
        await running
    print(f"\nkill under load: {load.gets} reads, {load.posts} sends, failures: {load.failures}")
    with error_log.open() as file:
        file.seek(log_start)
        upstream_errors = [line.split("] ", 1)[-1] for line in file if "upstream" in line]
    print("nginx:", *upstream_errors, sep="\n")
    # A read that was in flight on the killed instance is retried on the other one. An instance
    # writes each answer in one write (common.serving), so nginx never has the head of an answer
    # the instance died before finishing: it has nothing to cut ("while reading upstream"), only
    # requests to retry ("while reading response header from upstream").
    cut = [line for line in upstream_errors if "while reading upstream" in line]
    assert not cut, cut
    assert load.get_failures == 0, load.failures
    # Sends in flight when it died may fail (nginx never resends them), but none is stored twice
    # and every acknowledged one is stored.
    stored = await stored_texts(db, chat_id, "kill")
    assert len(stored) == len(set(stored))
    assert set(load.sent) <= set(stored)
    assert set(stored) - set(load.sent) <= set(load.failed_sends)
    assert len(load.failed_sends) <= load.workers


# ---- supervisor -----------------------------------------------------------------------------------
def test_backoff_doubles_up_to_thirty_seconds() -> None:
    assert [backoff_delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


async def test_a_killed_instance_comes_back_by_itself(
    stack: Stack, api: httpx.AsyncClient, make_user: Any
) -> None:
    user, chat_id = await new_chat(api, make_user)
    old = stack.processes["private_chat1"].pid
    os.killpg(old, signal.SIGKILL)
    await wait_for(
        lambda: stack.processes["private_chat1"].pid != old and healthy(stack.instance_url("private_chat1")),
        what="private_chat1 to be restarted",
    )
    assert environ_of(stack.processes["private_chat1"].pid)["INSTANCE_ID"] == "private_chat1"
    # The new process serves (straight to the instance, then through nginx).
    async with httpx.AsyncClient(timeout=30) as direct:
        response = await direct.get(
            f"{stack.instance_url('private_chat1')}/private/{chat_id}/messages/",
            headers={"X-User-Id": str(user.id), **trusted.edge_headers()},
        )
    assert response.status_code == 200
    assert (await api.get(f"/private/{chat_id}/messages/", headers=user.headers)).status_code == 200


async def test_a_hung_instance_is_killed_and_its_reads_answered_elsewhere(
    stack: Stack, api: httpx.AsyncClient, make_user: Any
) -> None:
    """An instance that stops answering (SIGSTOP: its connections are accepted, nothing is read)
    is killed by the liveness watch and restarted; the reads nginx had sent it are answered by
    the other instance, well before nginx's 60 s read timeout."""
    user, chat_id = await new_chat(api, make_user)
    # Restarted by an earlier test maybe: stopped only once the watch has seen it answer (an
    # instance stopped before that is caught by the startup allowance, a minute later).
    await wait_for(lambda: stack.liveness_watches("private_chat1"), what="the watch to see private_chat1")
    old = stack.processes["private_chat1"].pid
    os.killpg(old, signal.SIGSTOP)
    started = time.monotonic()
    try:
        # Enough reads at once that some reach the hung instance (nginx goes round the two).
        answers = await asyncio.gather(
            *(api.get(f"/private/{chat_id}/messages/", headers=user.headers, timeout=60) for _ in range(8))
        )
        waited = time.monotonic() - started
        await wait_for(
            lambda: stack.processes["private_chat1"].pid != old
            and healthy(stack.instance_url("private_chat1")),
            what="private_chat1 to be killed and restarted",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old, signal.SIGCONT)
    assert [answer.status_code for answer in answers] == [200] * 8, (waited, [a.text for a in answers])
    assert waited < 30, waited
    print(f"\nhung instance: every read answered {waited:.1f} s after the freeze")


# ---- rolling restart ------------------------------------------------------------------------------
async def test_rolling_restart_under_load_fails_no_request(
    stack: Stack, base_url: str, api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    user, chat_id = await new_chat(api, make_user)
    load = Load(base_url, user.headers, chat_id, tag="roll")
    before = {name: stack.processes[name].pid for name in stack.instances_of("private_chat")}
    running = asyncio.create_task(load.run())
    try:
        await load.until(50)
        restart = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "devstack", "restart", "private_chat"],
            env={**os.environ, "DATA_DIR": str(stack.config.data_dir)},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        await load.until(load.gets + load.posts + 50)
    finally:
        load.stop.set()
        await running
    print(
        f"\nrolling restart under load: {load.gets} reads, {load.posts} sends, "
        f"{len(load.failures)} failed: {load.failures}\n{restart.stdout}"
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert "private_chat2: answering again" in restart.stdout
    after = {name: stack.processes[name].pid for name in stack.instances_of("private_chat")}
    assert all(after[name] != before[name] for name in before)
    assert load.failures == []
    stored = await stored_texts(db, chat_id, "roll")
    assert sorted(stored) == sorted(load.sent)


def test_restart_names_an_unknown_service() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "restart", "nope"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "unknown service 'nope'" in result.stderr


# ---- first run --------------------------------------------------------------------------------------
def test_a_taken_port_fails_at_once_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = StackConfig.for_tests(tmp_path / "data")
        config.http_port = port
        started = time.monotonic()
        with pytest.raises(StackError, match=rf"^port {port} is taken; set HTTP_PORT to a free port$"):
            Stack(config).start()
        assert time.monotonic() - started < 5
        config = StackConfig.for_tests(tmp_path / "data")
        config.ports["users2"] = port
        with pytest.raises(StackError, match=rf"^port {port} is taken \(users2\); set SERVICES_PORT_BASE "):
            Stack(config).start()


def test_starting_over_a_running_stack_says_so(stack: Stack) -> None:
    assert read_state(stack.config.data_dir) is not None
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "up"],
        env={**os.environ, "DATA_DIR": str(stack.config.data_dir), "HTTP_PORT": str(free_port())},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "a stack is already running" in result.stderr
    assert "make down" in result.stderr
    assert healthy(stack.instance_url("gateway1"))


def test_service_logs_are_json_without_colour_codes(stack: Stack) -> None:
    text = (stack.log_dir / "auth1.log").read_text(errors="replace")
    assert '"msg":' in text
    assert "color_message" not in text
    assert "\x1b[" not in text


def test_the_banner_lists_every_entry_point(stack: Stack) -> None:
    shown = banner(stack.config, detached=False)
    for spec in stack.config.services():
        assert spec.docs is not None
        assert f"{stack.config.public_base_url}{spec.docs}" in shown
        for name in stack.instances_of(spec.name):
            assert f"http://127.0.0.1:{stack.config.ports[name]}/metrics" in shown
    assert f"{stack.config.public_base_url}/qr/" in shown


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres system user matters only as root")
async def test_a_clone_in_a_private_home_starts(tmp_path: Path) -> None:
    """A checkout under a 0700 folder (root's home): PostgreSQL (user postgres) and nginx's
    workers (nobody) cannot enter it, so what they need lives under /var/lib/chat-dev."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    config = StackConfig.for_tests(home / "clone" / ".data", instances=1)
    config.database_url = None
    running = Stack(config)
    try:
        await asyncio.to_thread(running.start)
        assert running.shared_dir.parent == Path("/var/lib/chat-dev")
        assert running.postgres is not None
        assert running.postgres.root == running.shared_dir / "postgres"
        assert oct(home.stat().st_mode & 0o777) == "0o700"
        base = f"http://127.0.0.1:{config.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            body = {"username": "home_user", "email": "home@example.com", "password": "correct horse"}
            assert (await client.post("/auth/register/", json=body)).status_code == 200
            # PostgreSQL restarted under the running services.
            await asyncio.to_thread(running.restart_postgres)
            conn = await asyncpg.connect(running.database_url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM auth.credentials") == 1
            finally:
                await conn.close()
            assert (await client.get("/users/docs")).status_code == 200
    finally:
        await asyncio.to_thread(running.stop)
        shutil.rmtree(running.shared_dir, ignore_errors=True)
