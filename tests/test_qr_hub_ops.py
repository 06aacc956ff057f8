"""The hub ops the QR pages use, beyond API.md 13's: the phone is told what asks to log in
(`login request`), proves its account (`identify`) so the browser sees who is about to log in
(`mobile identified`, the public user object only), either side can refuse (`deny`), and a
client that stays is told when the other leaves. Websockets through nginx, no browser."""

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from PIL import Image
from qr_client import hub_client, new_client_id, next_op
from qr_site import qr_instance
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from devstack import Stack
from devstack.config import free_port

pytestmark = pytest.mark.usefixtures("stack")

FIREFOX_ON_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:128.0) Gecko/20100101 Firefox/128.0"


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))


async def closed_with(ws: ClientConnection) -> tuple[int | None, list[dict[str, Any]]]:
    """Everything the server still sends, then its close code."""
    messages = []
    try:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    except ConnectionClosed:
        pass
    return ws.close_code, messages


async def until(ws: ClientConnection, op: str) -> dict[str, Any]:
    """The first message `op`, skipping whatever comes before it."""
    while True:
        message = await recv(ws)
        if message["op"] == op:
            return message


async def nothing_pending(ws: ClientConnection) -> None:
    """The next thing the client hears is the answer to its own heartbeat: nothing was queued."""
    await ws.send(json.dumps({"op": "heartbeat"}))
    assert await recv(ws) == {"op": "heartbeat_ack"}


@asynccontextmanager
async def hub_pair(ws_url: str, client_id: str) -> AsyncIterator[tuple[ClientConnection, ClientConnection]]:
    """A browser and a phone in one hub, with what joining sends them already read."""
    async with hub_client(ws_url, client_id) as browser, hub_client(ws_url, client_id) as phone:
        assert (await recv(phone))["op"] == "login request"
        assert await recv(browser) == {"op": "mobile connected"}
        yield browser, phone


async def identify(ws: ClientConnection, token: object) -> dict[str, Any]:
    await ws.send(json.dumps({"op": "identify", "token": token}))
    return await next_op(ws)


async def test_the_phone_is_told_what_asks_and_the_browser_is_not(ws_url: str) -> None:
    client_id = new_client_id()
    # A client's own X-Real-IP is not believed: nginx sets it.
    headers = {"X-Real-IP": "203.0.113.9"}
    async with connect(
        f"{ws_url}?client_id={client_id}", user_agent_header=FIREFOX_ON_MAC, additional_headers=headers
    ) as browser:
        hello = await recv(browser)
        assert (hello["op"], hello["role"]) == ("hello", "browser")
        async with connect(f"{ws_url}?client_id={client_id}") as phone:
            hello = await recv(phone)
            assert (hello["op"], hello["role"]) == ("hello", "phone")
            request = await recv(phone)
            assert request.pop("op") == "login request"
            opened_at = request.pop("opened_at")
            assert opened_at.endswith("Z")
            assert request == {
                "browser": "Firefox 128",
                "os": "macOS 10.15",
                "user_agent": FIREFOX_ON_MAC,
                "address": "127.0.0.1",
            }
            assert await recv(browser) == {"op": "mobile connected"}
            await nothing_pending(browser)
            await nothing_pending(phone)


async def test_identify_shows_the_browser_the_public_user_only(
    ws_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    user = await make_user()
    client_id = new_client_id()
    async with hub_pair(ws_url, client_id) as (browser, phone):
        public = {"id": user.id, "username": user.username, "avatar_url": None}
        assert await identify(phone, f"Bearer {user.token}") == {"op": "identified", "user": public}
        assert await until(browser, "mobile identified") == {"op": "mobile identified", "user": public}
        # Once per phone: a second account cannot replace the first one on the browser's screen.
        other = await make_user()
        assert await identify(phone, other.token) == {"op": "already identified"}
        await nothing_pending(browser)
        # The hub goes on as before: the ticket logs the browser in.
        ticket = (await api.get("/auth/encrypt_user_data/", headers=user.headers)).json()["token"]
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
        assert await next_op(browser) == {"op": "access granted", "auth_token": ticket}


async def test_identify_carries_the_avatar(ws_url: str, make_user: Any, api: httpx.AsyncClient) -> None:
    user = await make_user()
    image = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 90)).save(image, "PNG")
    uploaded = await api.patch(
        "/users/upload-avatar/", headers=user.headers, files={"avatar_file": ("a.png", image.getvalue())}
    )
    assert uploaded.status_code == 200, uploaded.text
    avatar_url = (await api.get("/users/me/", headers=user.headers)).json()["avatar_url"]
    client_id = new_client_id()
    async with hub_pair(ws_url, client_id) as (browser, phone):
        await identify(phone, user.token)
        shown = await until(browser, "mobile identified")
    assert shown == {
        "op": "mobile identified",
        "user": {"id": user.id, "username": user.username, "avatar_url": avatar_url},
    }


async def test_bad_tokens_are_refused_and_the_hub_stays_open(
    ws_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    user = await make_user()
    revoked = await make_user()
    assert (await api.post("/auth/logout/", headers=revoked.headers)).status_code in (200, 204)
    header, payload, signature = user.token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    client_id = new_client_id()
    async with hub_pair(ws_url, client_id) as (browser, phone):
        for token in (revoked.token, forged, "garbage", "", "Bearer ", None, 42, ["x"]):
            assert await identify(phone, token) == {"op": "bad token"}, token
        await phone.send(json.dumps({"op": "identify"}))
        assert await next_op(phone) == {"op": "bad token"}
        await nothing_pending(browser)
        # A good token still works after the refusals.
        assert (await identify(phone, user.token))["op"] == "identified"


async def test_the_browser_cannot_identify(ws_url: str, make_user: Any) -> None:
    user = await make_user()
    client_id = new_client_id()
    async with hub_pair(ws_url, client_id) as (browser, phone):
        assert await identify(browser, user.token) == {"op": "unknown op"}
        await nothing_pending(phone)


@pytest.mark.parametrize("who", ["phone", "browser"])
async def test_deny_ends_the_hub_for_both(ws_url: str, who: str) -> None:
    client_id = new_client_id()
    async with hub_pair(ws_url, client_id) as (browser, phone):
        sender = phone if who == "phone" else browser
        await sender.send(json.dumps({"op": "deny"}))
        for ws in (browser, phone):
            code, messages = await closed_with(ws)
            assert code == 1000
            assert [m for m in messages if m["op"] == "denied"] == [{"op": "denied"}]
            assert messages[-1] == {"op": "denied"}


async def test_a_denied_hub_takes_no_ticket(ws_url: str, make_user: Any, api: httpx.AsyncClient) -> None:
    user = await make_user()
    ticket = (await api.get("/auth/encrypt_user_data/", headers=user.headers)).json()["token"]
    client_id = new_client_id()
    async with hub_pair(ws_url, client_id) as (browser, phone):
        # Back to back: the hub ends on the first, and the ticket behind it is never looked at.
        await phone.send(json.dumps({"op": "deny"}))
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
        code, messages = await closed_with(browser)
    assert code == 1000
    assert messages == [{"op": "denied"}]
    # The ticket was never accepted for this hub: it cannot be exchanged.
    for _ in range(20):
        exchanged = await api.get(
            "/auth/qr_auth/", params={"client_id": client_id}, headers={"Authorization": ticket}
        )
        if exchanged.status_code != 429:
            break
        await asyncio.sleep(float(exchanged.headers.get("Retry-After", "1")))
    assert exchanged.status_code == 401


async def test_the_one_who_stays_is_told_the_other_left(ws_url: str) -> None:
    client_id = new_client_id()
    async with hub_client(ws_url, client_id) as browser:
        async with hub_client(ws_url, client_id):
            assert await recv(browser) == {"op": "mobile connected"}
        assert await recv(browser) == {"op": "mobile disconnected"}
        # The code is still good: another phone may join.
        async with hub_client(ws_url, client_id) as phone:
            assert await until(browser, "mobile connected")
            await browser.close()
            assert await until(phone, "browser disconnected")
            # The hub ends with its browser: the phone is closed with 1000.
            assert await closed_with(phone) == (1000, [])


async def test_no_one_takes_the_place_of_a_browser_that_left(
    ws_url: str, api: httpx.AsyncClient, make_user: Any
) -> None:
    """A newcomer with the client_id of a hub whose browser left is never in that hub: it is
    refused while the phone is still there, and opens a hub of its own after. So it never learns
    the phone's account, nor gets a ticket the phone sends."""
    user = await make_user()
    client_id = new_client_id()
    minted = await api.get("/auth/encrypt_user_data/", headers={"Authorization": user.token})
    ticket = minted.json()["token"]
    async with hub_client(ws_url, client_id) as browser, hub_client(ws_url, client_id) as phone:
        assert await until(browser, "mobile connected")
        await browser.close()
        assert await until(phone, "browser disconnected")
        async with connect(f"{ws_url}?client_id={client_id}", open_timeout=10) as newcomer:
            first = await recv(newcomer)
            # Refused, or (the phone already gone) the browser of a hub of its own: never the phone.
            assert first == {"op": "clients already in hub"} or first.get("role") == "browser", first
            # The phone's app sends its ticket all the same, before it notices the close.
            with contextlib.suppress(ConnectionClosed):
                await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
            code, heard = await closed_with(phone)
            assert code == 1000
            assert "access granted" not in [message["op"] for message in heard]
            if first["op"] == "hello":
                await nothing_pending(newcomer)
    # Refused while the phone's side of the hub is still closing; then a hub of its own.
    for _ in range(50):
        async with connect(f"{ws_url}?client_id={client_id}", open_timeout=10) as newcomer:
            first = await recv(newcomer)
            if first == {"op": "clients already in hub"}:
                await asyncio.sleep(0.1)
                continue
            assert first["op"] == "hello", first
            assert first["role"] == "browser", first
            await nothing_pending(newcomer)
            break
    else:
        raise AssertionError("the hub of a browser that left was never freed")
    exchanged = await api.get(
        "/auth/qr_auth/", params={"client_id": client_id}, headers={"Authorization": ticket}
    )
    assert exchanged.status_code == 401


async def test_identify_with_the_auth_service_unreachable(stack: Stack, make_user: Any) -> None:
    user = await make_user()
    with qr_instance(stack, QR_AUTH_SERVICE_URL=f"http://127.0.0.1:{free_port()}") as instance:
        url = f"ws://{instance.address}/auth_events/qr_auth/"
        client_id = new_client_id()
        async with hub_pair(url, client_id) as (browser, phone):
            assert await identify(phone, user.token) == {"op": "try again later"}
            await nothing_pending(browser)
            await nothing_pending(phone)


async def test_the_identify_endpoint_is_not_routed(api: httpx.AsyncClient, make_user: Any) -> None:
    user = await make_user()
    for path in ("/internal/qr/identify", "/auth/internal/qr/identify", "/auth_events/internal/qr/identify"):
        response = await api.post(path, json={"token": user.token})
        assert response.status_code in (404, 405), path
        assert "user" not in response.text
