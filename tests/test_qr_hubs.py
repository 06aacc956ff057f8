"""QR hub rules (API.md 13): who may join, what each message gets, limits, lifetimes, no leaked
hubs, and what losing one websocket instance costs. Through nginx, except the two lifetime tests,
which need an instance with short timeouts of its own."""

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trusted
from polite_client import send_retrying
from qr_client import hub_client, new_client_id, next_op
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from devstack import Stack
from devstack.config import REPO_ROOT, free_port

pytestmark = pytest.mark.usefixtures("stack")


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes the socket: (close code, reason)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason


async def refused(url: str) -> tuple[dict[str, Any], int | None]:
    """Connect, read the one message the server sends, and the close code that follows."""
    async with connect(url, open_timeout=10) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        code, _ = await closed_with(ws)
    return message, code


async def totals(instances: dict[str, str]) -> tuple[int, int]:
    hubs = clients = 0
    async with trusted.internal_client(timeout=10) as http:
        for url in instances.values():
            stats = (await http.get(f"{url}/internal/stats")).json()
            hubs += stats["hubs"]
            clients += stats["clients"]
    return hubs, clients


async def settle(instances: dict[str, str], expected: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """Instances free hubs as soon as they see a disconnect; give them the moment that takes."""
    for _ in range(100):
        current = await totals(instances)
        if current == expected:
            return current
        await asyncio.sleep(0.1)
    return current


async def instance_of(instances: dict[str, str], client_id: str) -> str | None:
    async with trusted.internal_client(timeout=10) as http:
        for name, url in instances.items():
            if (await http.get(f"{url}/internal/hubs", params={"client_id": client_id})).status_code == 200:
                return name
    return None


async def test_a_third_client_is_refused(ws_url: str, instances: dict[str, str]) -> None:
    client_id = new_client_id()
    async with hub_client(ws_url, client_id) as browser, hub_client(ws_url, client_id) as phone:
        message, code = await refused(f"{ws_url}?client_id={client_id}")
        assert message == {"op": "clients already in hub"}
        assert code == 1000
        # The two inside carry on.
        for ws in (browser, phone):
            await ws.send(json.dumps({"op": "heartbeat"}))
            assert await next_op(ws) == {"op": "heartbeat_ack"}
        name = await instance_of(instances, client_id)
        assert name is not None
        async with trusted.internal_client() as http:
            hub = (await http.get(f"{instances[name]}/internal/hubs", params={"client_id": client_id})).json()
        assert hub["clients"] == 2


@pytest.mark.parametrize(
    "query",
    [
        "?client_id=" + "a" * 15,  # too short
        "?client_id=" + "a" * 129,  # too long
        "?client_id=" + "a" * 20 + "%21",  # '!'
        "?client_id=" + "a" * 20 + ".b",
        "?client_id=" + "a" * 20 + "%20b",
        "?client_id=" + "ä" * 20,
        "?client_id=",
        "",
        # A valid id spelled with escapes: nginx routes by the raw text, so it would reach
        # another instance's hub of the same id.
        "?client_id=" + "a" * 20 + "%41",
    ],
)
async def test_a_malformed_client_id_gets_hub_is_full(
    query: str, ws_url: str, instances: dict[str, str]
) -> None:
    before = await settle(instances)
    message, code = await refused(ws_url + query)
    assert message == {"op": "hub is full"}
    assert code == 1000
    assert await totals(instances) == before


async def test_each_message_gets_its_answer(ws_url: str) -> None:
    async with hub_client(ws_url, new_client_id()) as ws:
        answers = {
            json.dumps({"op": "heartbeat"}): {"op": "heartbeat_ack"},
            "not json": {"op": "unknown op"},
            "{": {"op": "unknown op"},
            "[1, 2]": {"op": "unknown op"},
            '"heartbeat"': {"op": "unknown op"},
            "null": {"op": "unknown op"},
            json.dumps({"op": "dance"}): {"op": "unknown op"},
            json.dumps({"op": ["heartbeat"]}): {"op": "unknown op"},
            json.dumps({"no": "op"}): {"op": "unknown op"},
            json.dumps({"op": "access granted", "auth_token": "mine"}): {"op": "unknown op"},
        }
        for frame, answer in answers.items():
            await ws.send(frame)
            assert await next_op(ws) == answer, frame
        await ws.send(b'{"op": "heartbeat"}')  # a binary frame is not a message of ours
        assert await next_op(ws) == {"op": "unknown op"}
        await ws.send(json.dumps({"op": "heartbeat"}))
        assert await next_op(ws) == {"op": "heartbeat_ack"}


@pytest.mark.parametrize("size", [4097, 64 * 1024, 1024 * 1024])
async def test_an_oversize_frame_closes_the_connection(
    size: int, ws_url: str, instances: dict[str, str]
) -> None:
    client_id = new_client_id()
    async with hub_client(ws_url, client_id) as ws:
        frame = json.dumps({"op": "heartbeat", "pad": "x" * size})
        await ws.send(frame)
        code, reason = await closed_with(ws)
    assert code == 1009
    if len(frame) <= 65536:
        # Past 64 KiB the websocket layer itself refuses the frame (uvicorn --ws-max-size).
        assert reason == "frame too large"
    await settle(instances)
    assert await instance_of(instances, client_id) is None


# The stack's websocket instances run the documented defaults (.env.example): QR_RATE_BURST=20,
# QR_RATE_PER_SECOND=5.
RATE_BURST = 20
RATE_PER_SECOND = 5.0


async def test_a_flood_is_closed_not_served(ws_url: str) -> None:
    loop = asyncio.get_running_loop()
    async with hub_client(ws_url, new_client_id()) as ws:
        started = loop.time()
        # Sent without waiting for answers: far more than the burst the bucket allows.
        for _ in range(300):
            try:
                await ws.send(json.dumps({"op": "heartbeat"}))
            except ConnectionClosed:
                break
        acks = 0
        try:
            while True:
                if json.loads(await asyncio.wait_for(ws.recv(), 30))["op"] == "heartbeat_ack":
                    acks += 1
        except ConnectionClosed:
            pass
        elapsed = loop.time() - started
    assert ws.close_code == 1008
    assert ws.close_reason == "rate limit"
    # The burst is served, and past it only what the bucket refilled while the flood lasted
    # (on a loaded machine the flood takes longer, so the bound grows with the time it took).
    assert RATE_BURST <= acks <= RATE_BURST + int(RATE_PER_SECOND * elapsed) + 1, (acks, elapsed)


async def test_hubs_whose_clients_left_are_freed(ws_url: str, instances: dict[str, str]) -> None:
    assert await settle(instances) == (0, 0)
    peak = 0

    async def one_hub(index: int) -> None:
        nonlocal peak
        client_id = new_client_id()
        async with hub_client(ws_url, client_id) as browser:
            if index % 3 == 0:
                return  # the browser leaves politely
            async with hub_client(ws_url, client_id) as phone:
                if index % 3 == 1:
                    message, code = await refused(f"{ws_url}?client_id={client_id}")
                    assert (message, code) == ({"op": "clients already in hub"}, 1000)
                    peak = max(peak, (await totals(instances))[0])
                    return
                # Both vanish without a closing handshake, as a phone losing signal would.
                phone.transport.abort()
                browser.transport.abort()

    for batch in range(6):
        await asyncio.gather(*(one_hub(batch * 25 + index) for index in range(25)))
    assert peak >= 2
    assert await settle(instances) == (0, 0)


@pytest.fixture
def own_instance(stack: Stack, tmp_path: Path) -> Iterator[Any]:
    """Starts a websocket instance with the given settings (and the stack's auth service)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**settings: str) -> str:
        port = free_port()
        env = {
            **os.environ,
            "QR_AUTH_SERVICE_URL": f"http://127.0.0.1:{stack.config.service_ports['auth']}",
            "QR_INSTANCE_ID": "qr-test",
            **settings,
        }
        log = (tmp_path / f"qr_{port}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "qr_ws_service.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
        )  # fmt: skip
        log.close()
        started.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"qr_{port}.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    return f"127.0.0.1:{port}"
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail("the websocket instance did not start")

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_a_hub_times_out(own_instance: Any) -> None:
    # Long enough for two connections and two heartbeat round trips on a loaded machine, short
    # enough to wait for.
    ttl = 5.0
    address = own_instance(QR_HUB_TTL=str(ttl))
    url = f"ws://{address}/auth_events/qr_auth/"
    client_id = new_client_id()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with connect(f"{url}?client_id={client_id}") as browser:
        hello = json.loads(await browser.recv())
        assert hello["op"] == "hello"
        assert hello["timeout"] <= ttl
        async with hub_client(url, client_id) as phone:
            # Heartbeats keep the clients alive, but not the hub past its lifetime.
            for ws in (browser, phone):
                await ws.send(json.dumps({"op": "heartbeat"}))
                assert await next_op(ws) == {"op": "heartbeat_ack"}
            assert await next_op(phone) == {"op": "timeout"}
            # The hub began after `started` (same monotonic clock): it did not end early.
            assert loop.time() - started >= ttl - 0.1
            assert await next_op(browser) == {"op": "timeout"}
            assert (await closed_with(phone))[0] == 1000
            assert (await closed_with(browser))[0] == 1000
    assert await settle({"own": f"http://{address}"}) == (0, 0)


async def test_a_silent_client_is_dropped(own_instance: Any) -> None:
    address = own_instance(QR_HEARTBEAT_TIMEOUT="1", QR_HUB_TTL="600")
    url = f"ws://{address}/auth_events/qr_auth/"
    async with hub_client(url, new_client_id()) as ws:
        code, reason = await closed_with(ws)
    assert (code, reason) == (1000, "heartbeat timeout")
    assert await settle({"own": f"http://{address}"}) == (0, 0)


async def test_losing_an_instance_loses_only_its_hubs(
    stack: Stack, ws_url: str, instances: dict[str, str], api: httpx.AsyncClient, make_user: Any
) -> None:
    chosen: dict[str, str] = {}
    while len(chosen) < 2:
        client_id = new_client_id()
        async with hub_client(ws_url, client_id):
            name = await instance_of(instances, client_id)
        assert name is not None
        chosen.setdefault(name, client_id)
    user = await make_user()
    try:
        async with hub_client(ws_url, chosen["qr1"]) as lost, hub_client(ws_url, chosen["qr2"]) as kept:
            await asyncio.to_thread(stack.stop_service, "qr_ws1")
            code, _ = await closed_with(lost)
            assert code != 1000
            await kept.send(json.dumps({"op": "heartbeat"}))
            assert await next_op(kept) == {"op": "heartbeat_ack"}
        # A new hub under the lost hub's client_id is served by the surviving instance.
        ticket = (await api.get("/auth/encrypt_user_data/", headers=user.headers)).json()["token"]
        client_id = chosen["qr1"]
        async with hub_client(ws_url, client_id) as browser, hub_client(ws_url, client_id) as phone:
            assert await instance_of({"qr2": instances["qr2"]}, client_id) == "qr2"
            await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
            assert await next_op(browser) == {"op": "access granted", "auth_token": ticket}
    finally:
        if "qr_ws1" not in stack.processes:
            await asyncio.to_thread(stack.start_service, "qr_ws1")
    # The exchange shares the log-in rate limit: wait out a 429.
    response = await send_retrying(
        api, "GET", "/auth/qr_auth/", params={"client_id": client_id}, headers={"Authorization": ticket}
    )
    assert response.status_code == 200


async def test_client_ids_stay_out_of_the_logs(stack: Stack, ws_url: str, instances: dict[str, str]) -> None:
    # Every character class a client_id may hold, so a redaction that stops at '-' or '_' shows.
    parts = [secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(8)]
    client_id = f"{parts[0]}-{parts[1]}_{parts[2]}"
    async with hub_client(ws_url, client_id) as ws:
        # nginx's id for this connection; the instance logs its lines under it.
        request_id = ws.response.headers["X-Request-Id"]
        name = await instance_of(instances, client_id)
    assert name is not None
    await settle(instances)
    log = stack.log_dir / f"qr_ws{name[-1]}.log"
    accepted: list[str] = []
    for _ in range(50):
        entries = [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line]
        accepted = [
            entry["msg"]
            for entry in entries
            if entry.get("request_id") == request_id and "WebSocket" in entry.get("msg", "")
        ]
        if accepted:
            break
        await asyncio.sleep(0.1)
    # This connection's own line names the path with the id masked, whole.
    assert accepted, f"no line of connection {request_id} in {log}"
    for message in accepted:
        assert '"WebSocket /auth_events/qr_auth/?client_id=***"' in message, message
    logs = [*stack.log_dir.glob("qr_ws*.log"), *(stack.config.data_dir / "nginx" / "logs").glob("*.log")]
    for path in logs:
        text = path.read_text(errors="replace")
        for part in parts:
            assert part not in text, path


async def test_auth_service_unreachable_keeps_the_hub_open(own_instance: Any) -> None:
    address = own_instance(QR_AUTH_SERVICE_URL=f"http://127.0.0.1:{free_port()}")
    url = f"ws://{address}/auth_events/qr_auth/"
    async with hub_client(url, new_client_id()) as ws:
        await ws.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": "A" * 82}))
        assert await next_op(ws) == {"op": "try again later"}
        await ws.send(json.dumps({"op": "heartbeat"}))
        assert await next_op(ws) == {"op": "heartbeat_ack"}
