"""QR login end to end through nginx (API.md 13 and 14): a browser and a phone, as real websocket
clients, on both websocket instances; tickets single-use across instances; every bad ticket."""

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import trusted
from polite_client import send_retrying
from qr_client import hub_client, new_client_id, next_op
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from auth_service.qr.tickets import TicketClaims, TicketCodec
from devstack import Stack

pytestmark = pytest.mark.usefixtures("stack")


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the socket; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    except ConnectionClosed:
        return ws.close_code


async def hubs_named(instances: dict[str, str], client_id: str) -> list[tuple[str, int]]:
    """Every instance holding a hub `client_id`, with how many clients it has there."""
    found = []
    async with trusted.internal_client(timeout=10) as http:
        for name, url in instances.items():
            response = await http.get(f"{url}/internal/hubs", params={"client_id": client_id})
            if response.status_code == 200:
                found.append((name, response.json()["clients"]))
    return found


async def instance_of(instances: dict[str, str], client_id: str) -> tuple[str, int]:
    """Which instance holds the hub `client_id`, and how many clients it has there."""
    found = await hubs_named(instances, client_id)
    assert len(found) == 1, found
    return found[0]


async def client_ids_on_each(
    ws_url: str, instances: dict[str, str], per_instance: int
) -> dict[str, list[str]]:
    """Client ids that nginx routes to each instance, found by opening hubs and asking."""
    chosen: dict[str, list[str]] = {name: [] for name in instances}
    for _ in range(64 * per_instance):
        client_id = new_client_id()
        async with hub_client(ws_url, client_id):
            name, _ = await instance_of(instances, client_id)
        if len(chosen[name]) < per_instance:
            chosen[name].append(client_id)
        if all(len(ids) == per_instance for ids in chosen.values()):
            return chosen
    pytest.fail(f"client ids never reached every instance: {chosen}")


async def client_ids_per_instance(ws_url: str, instances: dict[str, str]) -> dict[str, str]:
    return {name: ids[0] for name, ids in (await client_ids_on_each(ws_url, instances, 1)).items()}


async def hub_freed(instance_url: str, client_id: str) -> bool:
    async with trusted.internal_client(timeout=10) as http:
        for _ in range(100):
            response = await http.get(f"{instance_url}/internal/hubs", params={"client_id": client_id})
            if response.status_code == 404:
                return True
            await asyncio.sleep(0.1)
    return False


async def mint(api: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await api.get("/auth/encrypt_user_data/", headers=headers)
    assert response.status_code == 200, response.text
    ticket = response.json()["token"]
    assert isinstance(ticket, str)
    return ticket


async def exchange(
    api: httpx.AsyncClient, ticket: str | None, client_id: str, *, language: str = "en"
) -> httpx.Response:
    """GET /auth/qr_auth/ as a well-behaved browser (it waits out a 429: the log-in rate limit)."""
    headers = {"Accept-Language": language}
    if ticket is not None:
        headers["Authorization"] = ticket
    return await send_retrying(api, "GET", "/auth/qr_auth/", params={"client_id": client_id}, headers=headers)


async def ticket_row(db: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, state, client_id FROM auth.qr_tickets WHERE user_id = $1 ORDER BY created_at", user_id
    )


async def login_through_hub(
    ws_url: str, client_id: str, ticket: str, instances: dict[str, str]
) -> tuple[str, int]:
    """Browser opens the hub, phone joins and sends the ticket; both get it and are closed 1000."""
    async with hub_client(ws_url, client_id) as browser, hub_client(ws_url, client_id) as phone:
        try:
            joined = await asyncio.wait_for(browser.recv(), 10)
        except TimeoutError:
            # Say where the two clients are: one hub split over two instances is a routing fault.
            where = await hubs_named(instances, client_id)
            pytest.fail(f"no 'mobile connected' within 10 s; hub {client_id} (instance, clients): {where}")
        assert json.loads(joined) == {"op": "mobile connected"}
        # Both clients of the hub sit on one instance: that is what routing by client_id buys.
        instance, clients = await instance_of(instances, client_id)
        assert clients == 2
        await phone.send(json.dumps({"op": "heartbeat"}))
        assert await next_op(phone) == {"op": "heartbeat_ack"}
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
        granted = {"op": "access granted", "auth_token": ticket}
        assert await next_op(phone) == granted
        assert await next_op(browser) == granted
        assert await close_code(phone) == 1000
        assert await close_code(browser) == 1000
    return instance, clients


async def test_login_by_qr_on_each_instance(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, ws_url: str, instances: dict[str, str]
) -> None:
    assert len(instances) == 2
    chosen = await client_ids_per_instance(ws_url, instances)
    for expected_instance, client_id in chosen.items():
        user = await make_user()
        ticket = await mint(api, user.headers)
        assert user.token not in ticket

        instance, _ = await login_through_hub(ws_url, client_id, ticket, instances)
        assert instance == expected_instance

        [row] = await ticket_row(db, user.id)
        assert (row["state"], row["client_id"]) == ("accepted", client_id)

        # The browser trades the ticket for an ordinary token of the phone's user.
        response = await exchange(api, ticket, client_id)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["type"] == "Bearer"
        check = await api.get("/gateway/get-token/", headers={"Authorization": f"Bearer {body['token']}"})
        assert check.status_code == 200
        assert check.json()["user_id"] == user.id
        [row] = await ticket_row(db, user.id)
        assert row["state"] == "consumed"

        # Once only.
        replay = await exchange(api, ticket, client_id)
        assert replay.status_code == 401
        assert replay.json() == {"detail": "Invalid or expired ticket", "code": "invalid_ticket"}
        # The hub was freed when its clients left (the instance sees the disconnects a moment
        # after the clients do).
        assert await hub_freed(instances[instance], client_id)


async def test_a_ticket_is_accepted_once_whichever_instance_asks(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, ws_url: str, instances: dict[str, str]
) -> None:
    chosen = await client_ids_per_instance(ws_url, instances)
    first_hub, second_hub = chosen["qr1"], chosen["qr2"]
    user = await make_user()
    ticket = await mint(api, user.headers)

    await login_through_hub(ws_url, first_hub, ticket, instances)

    # The same ticket in a hub on the other instance: refused, and that hub stays open.
    async with hub_client(ws_url, second_hub) as browser, hub_client(ws_url, second_hub) as phone:
        assert (await instance_of(instances, second_hub))[0] == "qr2"
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
        assert await next_op(phone) == {"op": "bad ticket"}
        await browser.send(json.dumps({"op": "heartbeat"}))
        assert await next_op(browser) == {"op": "heartbeat_ack"}

    [row] = await ticket_row(db, user.id)
    assert (row["state"], row["client_id"]) == ("accepted", first_hub)
    # Nor can the other hub's browser exchange it.
    assert (await exchange(api, ticket, second_hub)).status_code == 401
    assert (await exchange(api, ticket, first_hub)).status_code == 200


async def test_a_ticket_dies_with_the_token_that_minted_it(
    api: httpx.AsyncClient, make_user: Any, ws_url: str, instances: dict[str, str]
) -> None:
    """Accepted in its hub, then the phone's token is logged out: the browser cannot exchange it.
    A ticket minted by another token of the same user is unaffected."""
    user = await make_user()
    phone_login = await api.post("/auth/login/", json={"email": user.email, "password": user.password})
    phone_headers = {"Authorization": f"Bearer {phone_login.json()['token']}"}
    doomed, kept = await mint(api, phone_headers), await mint(api, user.headers)
    doomed_hub, kept_hub = new_client_id(), new_client_id()
    await login_through_hub(ws_url, doomed_hub, doomed, instances)
    await login_through_hub(ws_url, kept_hub, kept, instances)

    assert (await api.post("/auth/logout/", headers=phone_headers)).status_code == 200
    refused = await exchange(api, doomed, doomed_hub)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_ticket"
    assert (await exchange(api, kept, kept_hub)).status_code == 200


async def test_logout_all_ends_every_unredeemed_ticket(
    api: httpx.AsyncClient, make_user: Any, ws_url: str, instances: dict[str, str]
) -> None:
    """Accepted or not yet, every ticket of the user dies; one minted after the cutoff works."""
    user = await make_user()
    accepted, unsent = await mint(api, user.headers), await mint(api, user.headers)
    accepted_hub = new_client_id()
    await login_through_hub(ws_url, accepted_hub, accepted, instances)

    assert (await api.post("/auth/logout-all/", headers=user.headers)).status_code == 200
    assert (await exchange(api, accepted, accepted_hub)).status_code == 401
    # The unsent one is refused by the hub, which stays open.
    refused_hub = new_client_id()
    async with hub_client(ws_url, refused_hub) as browser, hub_client(ws_url, refused_hub) as phone:
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": unsent}))
        assert await next_op(phone) == {"op": "bad ticket"}
        await browser.send(json.dumps({"op": "heartbeat"}))
        assert await next_op(browser) == {"op": "heartbeat_ack"}
    assert (await exchange(api, unsent, refused_hub)).status_code == 401

    fresh_login = await api.post("/auth/login/", json={"email": user.email, "password": user.password})
    fresh_headers = {"Authorization": f"Bearer {fresh_login.json()['token']}"}
    fresh = await mint(api, fresh_headers)
    fresh_hub = new_client_id()
    await login_through_hub(ws_url, fresh_hub, fresh, instances)
    exchanged = await exchange(api, fresh, fresh_hub)
    assert exchanged.status_code == 200, exchanged.text


async def test_bad_tickets_in_the_hub_keep_it_open(
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    make_user: Any,
    ws_url: str,
    stack: Stack,
) -> None:
    user = await make_user()
    other = await make_user()
    used = await mint(api, other.headers)
    first_hub = new_client_id()
    async with hub_client(ws_url, first_hub) as browser, hub_client(ws_url, first_hub) as phone:
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": used}))
        assert await next_op(phone) == {"op": "access granted", "auth_token": used}
        assert await close_code(browser) == 1000

    expired_in_db = await mint(api, user.headers)
    await db.execute(
        "UPDATE auth.qr_tickets SET expires_at = now() - interval '1 second' WHERE user_id = $1", user.id
    )
    expired_sealed = forge_ticket(stack, user.id, expires_at=int(time.time()) - 1)
    tampered = await mint(api, user.headers)
    tampered = tampered[:-4] + ("AAAA" if not tampered.endswith("AAAA") else "BBBB")
    bad_payloads: list[object] = [
        used,  # replayed: already accepted in another hub
        expired_in_db,
        expired_sealed,
        tampered,
        user.token,  # an access token in place of a ticket
        "garbage",
        "",
        None,
        12345,
        {"nested": "object"},
        "x" * 600,
    ]
    client_id = new_client_id()
    live = (
        "SELECT id, state, client_id FROM auth.qr_tickets"
        " WHERE user_id = ANY($1::bigint[]) AND expires_at > now() ORDER BY id"
    )
    before = await db.fetch(live, [user.id, other.id])
    async with hub_client(ws_url, client_id) as browser, hub_client(ws_url, client_id) as phone:
        for payload in bad_payloads:
            await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": payload}))
            assert await next_op(phone) == {"op": "bad ticket"}, payload
        await phone.send(json.dumps({"op": "pending_ticket"}))
        assert await next_op(phone) == {"op": "bad ticket"}
        assert await db.fetch(live, [user.id, other.id]) == before

        # Still open: a good ticket logs the browser in.
        good = await mint(api, user.headers)
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": good}))
        assert await next_op(browser) == {"op": "access granted", "auth_token": good}
    response = await exchange(api, good, client_id)
    assert response.status_code == 200


def forge_ticket(stack: Stack, user_id: int, *, expires_at: int, key: str | None = None) -> str:
    """A ticket sealed with the stack's own key (or another), as the auth service would make it."""
    secret = key or (stack.config.data_dir / "keys" / "qr_ticket.key").read_text()
    return TicketCodec(secret).encode(TicketClaims(uuid.uuid4(), user_id, expires_at))


async def test_exchange_refuses_every_bad_ticket(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, ws_url: str, stack: Stack
) -> None:
    user = await make_user()
    client_id = new_client_id()
    ticket = await mint(api, user.headers)

    # Minted but not yet accepted in any hub.
    assert (await exchange(api, ticket, client_id)).status_code == 401

    async with hub_client(ws_url, client_id) as browser, hub_client(ws_url, client_id) as phone:
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
        assert await next_op(browser) == {"op": "access granted", "auth_token": ticket}

    rows_before = await ticket_row(db, user.id)
    assert [r["state"] for r in rows_before] == ["accepted"]
    unauthenticated = await exchange(api, None, client_id)
    assert unauthenticated.status_code == 401
    russian = await exchange(api, "garbage", client_id, language="ru")
    assert russian.status_code == 401
    assert russian.json() == {"detail": "Недействительный или просроченный билет", "code": "invalid_ticket"}
    refused = {
        "another hub's client_id": await exchange(api, ticket, new_client_id()),
        "garbage": await exchange(api, "garbage", client_id),
        "an access token": await exchange(api, user.token, client_id),
        "a bearer access token": await exchange(api, f"Bearer {user.token}", client_id),
        "a valid-looking ticket nobody minted": await exchange(
            api, forge_ticket(stack, user.id, expires_at=int(time.time()) + 60), client_id
        ),
        "sealed with another key": await exchange(
            api,
            forge_ticket(stack, user.id, expires_at=int(time.time()) + 60, key=secrets.token_urlsafe(32)),
            client_id,
        ),
        "too long": await exchange(api, "A" * 5000, client_id),
    }
    for case, response in refused.items():
        assert response.status_code == 401, (case, response.text)
        assert response.json()["detail"] in ("Invalid or expired ticket", "Not authenticated"), case
    # Whatever does not succeed is a 401 (API.md 14), a missing or malformed client_id too.
    for malformed in ("short", "x" * 129, "bad/chars!" * 3, ""):
        response = await exchange(api, ticket, malformed)
        assert (response.status_code, response.json()["code"]) == (401, "invalid_ticket"), malformed
    missing = await send_retrying(api, "GET", "/auth/qr_auth/", headers={"Authorization": ticket})
    assert (missing.status_code, missing.json()["code"]) == (401, "invalid_ticket")
    # None of that used the ticket up.
    assert await ticket_row(db, user.id) == rows_before

    # Accepted, but expired by now.
    await db.execute(
        "UPDATE auth.qr_tickets SET expires_at = now() - interval '1 second' WHERE user_id = $1", user.id
    )
    assert (await exchange(api, ticket, client_id)).status_code == 401
    consumed = "SELECT count(*) FROM auth.qr_tickets WHERE user_id = $1 AND state = 'consumed'"
    assert await db.fetchval(consumed, user.id) == 0

    # In Bearer form too, the right ticket with the right hub works.
    second = await mint(api, user.headers)
    other_hub = new_client_id()
    async with hub_client(ws_url, other_hub) as browser, hub_client(ws_url, other_hub) as phone:
        await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": second}))
        assert await next_op(browser) == {"op": "access granted", "auth_token": second}
    assert (await exchange(api, f"Bearer {second}", other_hub)).status_code == 200


async def test_minting_needs_a_token(api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any) -> None:
    started = await db.fetchval("SELECT now()")
    minted_since = "SELECT count(*) FROM auth.qr_tickets WHERE created_at >= $1"
    for headers in ({}, {"Authorization": "Bearer garbage"}, {"X-User-Id": "1"}):
        response = await api.get("/auth/encrypt_user_data/", headers=headers)
        assert response.status_code == 401, headers
    # A ticket is not an access token either.
    user = await make_user()
    ticket = await mint(api, user.headers)
    response = await api.get("/auth/encrypt_user_data/", headers={"Authorization": f"Bearer {ticket}"})
    assert response.status_code == 401
    assert await db.fetchval(minted_since, started) == 1


async def test_ticket_names_the_user_and_nothing_secret(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, stack: Stack
) -> None:
    user = await make_user()
    ticket = await mint(api, user.headers)
    secret = (stack.config.data_dir / "keys" / "qr_ticket.key").read_text()
    claims = TicketCodec(secret).decode(ticket)
    assert claims is not None
    assert claims.user_id == user.id
    assert 0 < claims.expires_at - time.time() <= 121
    [row] = await ticket_row(db, user.id)
    assert row["id"] == claims.ticket_id
    password_hash = await db.fetchval(
        "SELECT password_hash FROM auth.credentials WHERE user_id = $1", user.id
    )
    assert password_hash not in ticket


async def test_live_tickets_per_user_are_capped(api: httpx.AsyncClient, make_user: Any) -> None:
    user = await make_user()
    for _ in range(20):
        await mint(api, user.headers)
    response = await api.get("/auth/encrypt_user_data/", headers=user.headers)
    assert response.status_code == 429
    assert "Retry-After" in response.headers


async def test_concurrent_use_of_one_ticket_succeeds_once(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, ws_url: str, instances: dict[str, str]
) -> None:
    user = await make_user()
    ticket = await mint(api, user.headers)
    # Four hubs on each instance, all sent the same ticket at once.
    hubs = [hub for ids in (await client_ids_on_each(ws_url, instances, 4)).values() for hub in ids]
    async with contextlib.AsyncExitStack() as stack:
        phones = [await stack.enter_async_context(hub_client(ws_url, hub)) for hub in hubs]
        message = json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket})
        await asyncio.gather(*(phone.send(message) for phone in phones))
        answers = await asyncio.gather(*(next_op(phone) for phone in phones))
    granted = [hub for hub, answer in zip(hubs, answers, strict=True) if answer["op"] == "access granted"]
    assert len(granted) == 1, answers
    assert sum(answer == {"op": "bad ticket"} for answer in answers) == len(hubs) - 1
    [row] = await ticket_row(db, user.id)
    assert (row["state"], row["client_id"]) == ("accepted", granted[0])

    exchanges = await asyncio.gather(*(exchange(api, ticket, granted[0]) for _ in range(8)))
    assert sorted(response.status_code for response in exchanges) == [200] + [401] * 7


async def test_expired_tickets_are_cleaned_up(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, stack: Stack
) -> None:
    """The running auth service's own housekeeping removes expired tickets (the test stack runs it
    every second, AUTH_HOUSEKEEPING_INTERVAL_SECONDS=1); nothing here deletes anything."""
    user = await make_user()
    expired, live = await mint(api, user.headers), await mint(api, user.headers)
    secret = (stack.config.data_dir / "keys" / "qr_ticket.key").read_text()
    codec = TicketCodec(secret)
    expired_claims, live_claims = codec.decode(expired), codec.decode(live)
    assert expired_claims is not None
    assert live_claims is not None
    await db.execute(
        "UPDATE auth.qr_tickets SET expires_at = now() - interval '1 second' WHERE id = $1",
        expired_claims.ticket_id,
    )
    remaining = {row["id"] for row in await ticket_row(db, user.id)}
    for _ in range(300):  # up to 30 s: a few housekeeping rounds even on a loaded machine
        if remaining == {live_claims.ticket_id}:
            break
        await asyncio.sleep(0.1)
        remaining = {row["id"] for row in await ticket_row(db, user.id)}
    assert remaining == {live_claims.ticket_id}


async def test_internal_endpoints_are_not_routed(api: httpx.AsyncClient, make_user: Any) -> None:
    user = await make_user()
    ticket = await mint(api, user.headers)
    body = {"ticket": ticket, "client_id": new_client_id()}
    for path in ("/internal/qr/accept", "/auth/internal/qr/accept", "/auth_events/../internal/qr/accept"):
        response = await api.post(path, json=body)
        assert response.status_code == 404, path
    for path in ("/internal/stats", "/auth_events/internal/stats", "/auth_events/../internal/stats"):
        assert (await api.get(path)).status_code == 404, path
