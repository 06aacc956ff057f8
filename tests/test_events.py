"""The event gateway (API.md 19, 20) on the real stack: two events instances behind nginx, real
Redis and PostgreSQL. Sessions connect through nginx, or straight to an instance's port where a
test must place them. The stack's events timers are short (conftest): heartbeat interval 3 s,
identify within 4 s, resume window 6 s, session queue 50 frames."""

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import redis.asyncio as aioredis
import trusted
from events_client import EventsClient
from polite_client import post_retrying

from auth_service.tokens import TokenIssuer, load_private_key
from common.events import Event, EventPublisher, session_key
from devstack import Stack
from private_chat_service.repository import send_as_member

HEARTBEAT_EVERY = 1.0  # a third of the test stack's 3 s interval
RESUME_WINDOW = 6.0
QUEUE_LIMIT = 50


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def events_instances(stack: Stack) -> None:
    """The events service runs where devstack starts it (two instances and a private Redis)."""
    ports = getattr(stack.config, "ports", {})
    if "events1" not in ports or "events2" not in ports:
        pytest.skip("this stack starts no events instances (devstack without the events service)")


@pytest.fixture(scope="module")
def events_url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.config.http_port}/events/"


@pytest.fixture(scope="module")
def instance_urls(stack: Stack) -> dict[str, str]:
    """events1 / events2 straight (no nginx), to place sessions on a chosen instance."""
    return {name: f"ws://127.0.0.1:{stack.config.ports[name]}/events/" for name in ("events1", "events2")}


def stats_url(stack: Stack, name: str) -> str:
    return f"http://127.0.0.1:{stack.config.ports[name]}/internal/stats"


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    assert stack.redis_url
    client = aioredis.Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[EventsClient]]]:
    """Connects clients and closes whatever is left at the end of the test."""
    opened: list[EventsClient] = []

    async def connect(url: str, **kwargs: Any) -> EventsClient:
        # Straight to an instance, as nginx connects (nginx overwrites the header on its own path).
        kwargs.setdefault("additional_headers", trusted.edge_headers())
        client = await EventsClient.connect(url, **kwargs)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture(scope="module")
def issuer(stack: Stack) -> Callable[[int, int], str]:
    """Tokens signed with the stack's own key (for expiry tests: the auth service issues 7 days)."""
    pem = (stack.config.data_dir / "keys" / "jwt_ed25519.pem").read_text()
    key = load_private_key(pem)

    def issue(user_id: int, ttl: int) -> str:
        return TokenIssuer(key, issuer="chat-auth", audience="chat-api", ttl=ttl).issue(user_id)

    return issue


async def published(db: asyncpg.Connection) -> None:
    """Every committed outbox row is published: a session identified after this sees none of
    them as an event (an event committed before IDENTIFY but published after it is a dispatch
    after READY, as it must be: READY is a snapshot, the events are what follows it)."""
    deadline = time.monotonic() + 30
    while await db.fetchval("SELECT count(*) FROM private_chat.outbox"):
        assert time.monotonic() < deadline, "the outbox is not being published"
        await asyncio.sleep(0.02)


async def chat_between(
    api: httpx.AsyncClient, db: asyncpg.Connection, starter: Any, other: Any, text: str | None = None
) -> int:
    body: dict[str, Any] = {"recipient_id": other.id}
    if text is not None:
        body["text"] = text
    response = await post_retrying(api, "/private/start-chat/", json=body, headers=starter.headers)
    assert response.status_code == 200, response.text
    await published(db)
    return int(response.json()["chat_id"])


async def send(api: httpx.AsyncClient, user: Any, chat_id: int, text: str) -> int:
    # Sends are rate limited per user and chat (API.md 21): a well-behaved client waits.
    response = await post_retrying(
        api, f"/private/add-message/{chat_id}/", json={"text": text}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


async def identified(connect: Any, url: str, user: Any) -> EventsClient:
    client: EventsClient = await connect(url)
    await client.identify(user.token)
    client.beat(HEARTBEAT_EVERY)
    return client


async def texts(client: EventsClient, count: int) -> list[str]:
    found = []
    for _ in range(count):
        frame = await client.dispatch()
        assert frame["t"] == "MESSAGE_CREATE", frame
        found.append(frame["d"]["text"])
    return found


# ---- HELLO, IDENTIFY, READY, heartbeats ------------------------------------------------------------
async def test_identify_answers_ready_with_user_and_chats(
    api: httpx.AsyncClient, make_user: Any, clients: Any, events_url: str, db: asyncpg.Connection
) -> None:
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    with_bob = await chat_between(api, db, alice, bob, "first")
    last = await send(api, bob, with_bob, "second")
    with_carol = await chat_between(api, db, carol, alice)

    client = await clients(events_url)
    assert client.hello == {"op": 10, "d": {"heartbeat_interval": 3000}, "s": None, "t": None}
    ready = await client.identify(f"Bearer {alice.token}")  # with the scheme, and below without
    d = ready["d"]
    assert isinstance(d["session_id"], str)
    assert d["session_id"]
    assert d["user"] == {"id": alice.id, "username": alice.username, "avatar_url": None}
    assert d["chats"] == [
        {"id": with_carol, "companion": {"id": carol.id, "username": carol.username, "avatar_url": None},
         "last_message_id": None},
        {"id": with_bob, "companion": {"id": bob.id, "username": bob.username, "avatar_url": None},
         "last_message_id": last},
    ]  # fmt: skip
    other = await clients(events_url)
    second = await other.identify(alice.token)
    assert second["d"]["session_id"] != d["session_id"]


async def test_heartbeat_is_acknowledged_before_and_after_identify(
    make_user: Any, clients: Any, events_url: str
) -> None:
    alice = await make_user()
    client = await clients(events_url)
    await client.send(1, None)
    assert json.loads(await client.ws.recv()) == {"op": 11, "d": None, "s": None, "t": None}
    await client.identify(alice.token)
    await client.send(1, 1)
    assert json.loads(await client.ws.recv())["op"] == 11


# ---- dispatch ---------------------------------------------------------------------------------------
async def test_events_reach_every_session_of_both_members_across_instances(
    api: httpx.AsyncClient,
    make_user: Any,
    clients: Any,
    instance_urls: dict[str, str],
    events_url: str,
    db: asyncpg.Connection,
) -> None:
    alice, bob = await make_user(), await make_user()
    alice_one = await identified(clients, instance_urls["events1"], alice)
    alice_two = await identified(clients, events_url, alice)
    bob_one = await identified(clients, instance_urls["events2"], bob)

    chat_id = await chat_between(api, db, alice, bob, "hello")
    sent = [await send(api, alice if i % 2 else bob, chat_id, f"m{i}") for i in range(5)]

    for client, companion in ((alice_one, bob), (alice_two, bob), (bob_one, alice)):
        created = await client.dispatch()
        assert created["t"] == "CHAT_CREATE"
        assert created["d"] == {
            "id": chat_id,
            "companion": {"id": companion.id, "username": companion.username, "avatar_url": None},
        }
        first = await client.dispatch()
        assert first["t"] == "MESSAGE_CREATE"
        message = first["d"]
        assert message["text"] == "hello"
        assert message["chat_id"] == chat_id
        assert message["answer"] is None
        assert message["message_owner"] == {"id": alice.id, "username": alice.username, "avatar_url": None}
        assert message["edited_at"] is None
        assert message["created_at"].endswith("Z")
        rest = [await client.dispatch() for _ in sent]
        assert [frame["d"]["id"] for frame in rest] == sent  # commit order
        assert [frame["d"]["text"] for frame in rest] == [f"m{i}" for i in range(5)]
        assert client.seq == 2 + 1 + len(sent)  # READY, CHAT_CREATE, then each message


async def test_typing_reaches_the_other_member_only(
    api: httpx.AsyncClient,
    make_user: Any,
    clients: Any,
    instance_urls: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    alice, bob, mallory = await make_user(), await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    alice_ws = await identified(clients, instance_urls["events1"], alice)
    bob_ws = await identified(clients, instance_urls["events2"], bob)

    before = time.time()
    response = await api.post(f"/private/{chat_id}/typing/", headers=alice.headers)
    assert response.status_code == 204
    assert response.content == b""
    typing = await bob_ws.dispatch()
    assert typing["t"] == "TYPING_START"
    assert set(typing["d"]) == {"chat_id", "user_id", "timestamp"}
    assert typing["d"]["chat_id"] == chat_id
    assert typing["d"]["user_id"] == alice.id
    stamp = typing["d"]["timestamp"]
    assert stamp.endswith("Z")
    assert abs(datetime.fromisoformat(stamp).timestamp() - before) < 30
    # The typist gets no TYPING_START: its next event is the message sent after it.
    await send(api, bob, chat_id, "after typing")
    assert (await alice_ws.dispatch())["t"] == "MESSAGE_CREATE"

    stranger = await api.post(f"/private/{chat_id}/typing/", headers=mallory.headers)
    assert stranger.status_code == 403
    assert stranger.json()["code"] == "not_chat_member"
    missing = await api.post("/private/999999999/typing/", headers=alice.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "chat_not_found"
    anonymous = await api.post(f"/private/{chat_id}/typing/")
    assert anonymous.status_code == 401


async def test_an_uncommitted_or_rolled_back_send_publishes_nothing(
    api: httpx.AsyncClient, make_user: Any, clients: Any, events_url: str, db: asyncpg.Connection
) -> None:
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    with_bob = await chat_between(api, db, alice, bob)
    with_carol = await chat_between(api, db, alice, carol)
    alice_ws = await identified(clients, events_url, alice)

    transaction = db.transaction()
    await transaction.start()
    message = await send_as_member(
        db, chat_id=with_bob, user_id=alice.id, text="never committed", answer_id=None
    )
    assert message is not None
    # The relay runs past the open transaction: a committed send of another chat arrives.
    await send(api, carol, with_carol, "committed meanwhile")
    assert await texts(alice_ws, 1) == ["committed meanwhile"]
    await transaction.rollback()
    await send(api, bob, with_bob, "after the rollback")
    assert await texts(alice_ws, 1) == ["after the rollback"]


# ---- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (["not json"], 4002),
        (["[1, 2]"], 4002),
        (['{"d": null}'], 4002),
        (['{"op": "1"}'], 4002),
        (['{"op": true}'], 4002),
        (['{"op": 1, "d": "x"}'], 4002),
        (['{"op": 2, "d": "token"}'], 4002),
        (['{"op": 99}'], 4001),
        (['{"op": 3, "d": {}}'], 4001),
        (['{"op": 0, "d": {}}'], 4003),
        (['{"op": 11}'], 4003),
        (['{"op": 2, "d": {}}'], 4004),
        (['{"op": 2, "d": {"token": "not.a.token"}}'], 4004),
        (['{"op": 2, "d": {"token": ""}}'], 4004),
        (['{"op": 6, "d": {"token": "nope", "session_id": "x", "seq": 1}}'], 4004),
        (['{"op": 1, "d": null, "pad": "' + "x" * 5000 + '"}'], 4002),
        (['{"op": 1}'] * 121, 4008),
    ],
    ids=[
        "not-json", "array", "no-op", "op-string", "op-bool", "heartbeat-d", "identify-d", "unknown-op",
        "op-3", "dispatch-first", "ack-first", "no-token", "bad-token", "empty-token", "resume-bad-token",
        "too-large", "121-frames",
    ],
)  # fmt: skip
async def test_bad_frames_close_with_their_code(
    clients: Any, events_url: str, frames: list[str], code: int
) -> None:
    client = await clients(events_url)
    for frame in frames:
        await client.ws.send(frame)
    closed = await client.closed()
    assert closed.code == code, closed


async def test_binary_frames_are_refused(clients: Any, events_url: str) -> None:
    client = await clients(events_url)
    await client.ws.send(b'{"op": 1}')
    assert (await client.closed()).code == 4002


async def test_after_identify_the_wrong_ops_are_refused(
    make_user: Any, clients: Any, events_url: str
) -> None:
    alice = await make_user()
    for frame, code in (({"op": 2, "d": {"token": alice.token}}, 4005), ({"op": 0, "d": None}, 4001)):
        client = await clients(events_url)
        await client.identify(alice.token)
        await client.ws.send(json.dumps(frame))
        assert (await client.closed()).code == code
    # Two IDENTIFY frames at once: the first one's READY still arrives, then the 4005.
    client = await clients(events_url)
    identify = json.dumps({"op": 2, "d": {"token": alice.token}})
    await client.ws.send(identify)
    await client.ws.send(identify)
    ready = await client.dispatch()
    assert (ready["t"], ready["s"]) == ("READY", 1)
    assert (await client.closed()).code == 4005


async def test_expired_and_revoked_tokens_are_refused(
    api: httpx.AsyncClient, make_user: Any, clients: Any, events_url: str, issuer: Any
) -> None:
    alice = await make_user()
    expired = issuer(alice.id, -60)
    client = await clients(events_url)
    await client.send(2, {"token": expired})
    assert (await client.closed()).code == 4004

    assert (await api.post("/auth/logout/", headers=alice.headers)).status_code == 200
    client = await clients(events_url)
    await client.send(2, {"token": alice.token})
    assert (await client.closed()).code == 4004


async def test_no_identify_and_no_heartbeat_close_4009(make_user: Any, clients: Any, events_url: str) -> None:
    alice = await make_user()
    silent = await clients(events_url)
    started = time.monotonic()
    closed = await silent.closed()
    assert closed.code == 4009
    assert "IDENTIFY" in closed.reason
    assert 3.5 <= time.monotonic() - started < 14  # the test stack's 4 s

    quiet = await clients(events_url)
    await quiet.identify(alice.token)
    started = time.monotonic()
    closed = await quiet.closed()
    assert closed.code == 4009
    assert "heartbeat" in closed.reason
    assert 4 <= time.monotonic() - started < 14  # 1.5 intervals of 3 s


async def test_frames_within_the_rate_are_fine(make_user: Any, clients: Any, events_url: str) -> None:
    client = await clients(events_url)
    for _ in range(120):
        await client.send(1, None)
    for _ in range(120):
        assert json.loads(await asyncio.wait_for(client.ws.recv(), 15))["op"] == 11


# ---- token revocation and expiry on live sessions --------------------------------------------------------
async def test_logout_closes_live_sessions_on_every_instance_within_two_seconds(
    api: httpx.AsyncClient, make_user: Any, clients: Any, instance_urls: dict[str, str]
) -> None:
    alice = await make_user()
    sessions = [await identified(clients, url, alice) for url in instance_urls.values()]
    response = await api.post("/auth/logout/", headers=alice.headers)
    assert response.status_code == 200
    revoked_at = time.monotonic()
    for client in sessions:
        closed = await client.closed()
        assert closed.code == 4004, closed
    # 1 s polling: within 2 s of the logout (a little slack for a loaded test machine).
    assert time.monotonic() - revoked_at < 2.5


async def test_logout_all_closes_every_session_of_the_user_on_every_instance(
    api: httpx.AsyncClient, make_user: Any, clients: Any, instance_urls: dict[str, str]
) -> None:
    alice, bob = await make_user(), await make_user()
    second = await api.post("/auth/login/", json={"email": alice.email, "password": alice.password})
    second_token = second.json()["token"]
    sessions = [await identified(clients, url, alice) for url in instance_urls.values()]
    for url in instance_urls.values():
        client = await clients(url)
        await client.identify(second_token)
        client.beat(HEARTBEAT_EVERY)
        sessions.append(client)
    bystander = await identified(clients, instance_urls["events1"], bob)

    response = await api.post("/auth/logout-all/", headers=alice.headers)
    assert response.status_code == 200, response.text
    ended_at = time.monotonic()
    for client in sessions:
        closed = await client.closed()
        assert closed.code == 4004, closed
    assert time.monotonic() - ended_at < 2.5
    # A token from a log-in after the cutoff identifies and stays; another user's session too.
    fresh = await api.post("/auth/login/", json={"email": alice.email, "password": alice.password})
    after = await clients(instance_urls["events2"])
    await after.identify(fresh.json()["token"])
    after.beat(HEARTBEAT_EVERY)
    await asyncio.sleep(2.5)  # more than two rounds of the revocation watch
    for client in (after, bystander):
        assert client.ws.close_code is None
        await client.send(1, None)


async def test_a_session_whose_token_was_revoked_while_away_is_not_resumed(
    api: httpx.AsyncClient, make_user: Any, clients: Any, events_url: str
) -> None:
    """The watcher closes only sessions a connection holds; one waiting for its RESUME when its
    token is revoked is refused then (op 9), whichever token asks."""
    alice = await make_user()

    async def log_in() -> str:
        response = await api.post("/auth/login/", json={"email": alice.email, "password": alice.password})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    async def away(token: str) -> str:
        client = await clients(events_url)
        await client.identify(token)
        assert client.session_id is not None
        await client.close()
        return client.session_id

    for revoke in ("/auth/logout/", "/auth/logout-all/"):
        doomed, kept = await log_in(), await log_in()
        doomed_session, kept_session = await away(doomed), await away(kept)
        assert (await api.post(revoke, headers={"Authorization": f"Bearer {doomed}"})).status_code == 200
        asking = await log_in()
        client = await clients(events_url)
        await client.send(6, {"token": asking, "session_id": doomed_session, "seq": 1})
        assert await client.frame() == {"op": 9, "d": False, "s": None, "t": None}, revoke
        # The session of a token the logout left alive resumes (after a logout-all, none is left).
        client = await clients(events_url)
        if revoke == "/auth/logout/":
            assert await client.resume(asking, kept_session, 1) == []
        else:
            await client.send(6, {"token": asking, "session_id": kept_session, "seq": 1})
            assert (await client.frame())["op"] == 9


async def test_a_token_that_expires_closes_its_session_at_expiry(
    make_user: Any, clients: Any, events_url: str, issuer: Any
) -> None:
    alice = await make_user()
    token = issuer(alice.id, 3)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    client = await clients(events_url)
    await client.identify(token)
    client.beat(HEARTBEAT_EVERY)
    closed = await client.closed()
    assert closed.code == 4004
    assert "expired" in closed.reason
    assert expires_at - 0.5 <= time.time() < expires_at + 3


# ---- resume ------------------------------------------------------------------------------------------------
async def test_resume_on_the_other_instance_replays_exactly_what_was_missed(
    api: httpx.AsyncClient,
    make_user: Any,
    clients: Any,
    instance_urls: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    bob_ws = await identified(clients, instance_urls["events1"], bob)
    await send(api, alice, chat_id, "seen")
    assert await texts(bob_ws, 1) == ["seen"]
    session_id, seq = bob_ws.session_id, bob_ws.seq
    assert session_id is not None
    assert seq == 2
    await bob_ws.drop()

    missed = [f"missed {i}" for i in range(4)]
    for text in missed:
        await send(api, alice, chat_id, text)
    resumed = await clients(instance_urls["events2"])
    replayed = await resumed.resume(bob.token, session_id, seq)
    assert [frame["d"]["text"] for frame in replayed] == missed
    assert [frame["s"] for frame in replayed] == [3, 4, 5, 6]
    assert resumed.dispatches[-1] == {"op": 0, "t": "RESUMED", "d": {}, "s": 7}
    resumed.beat(HEARTBEAT_EVERY)
    await send(api, alice, chat_id, "live again")
    assert await texts(resumed, 1) == ["live again"]
    assert resumed.seq == 8


async def test_resume_from_an_older_seq_and_twice_in_a_row(
    api: httpx.AsyncClient,
    make_user: Any,
    clients: Any,
    instance_urls: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    """A client that lost frames already sent resumes from what it saw; a client whose
    connection dropped during a replay resumes again from inside it."""
    alice, bob = await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    bob_ws = await identified(clients, instance_urls["events1"], bob)
    for i in range(4):
        await send(api, alice, chat_id, f"a{i}")
    assert await texts(bob_ws, 4) == ["a0", "a1", "a2", "a3"]  # seqs 2..5
    session_id = bob_ws.session_id
    assert session_id is not None
    await bob_ws.drop()

    # It claims to have seen only up to seq 3 (a1): a2 and a3 come again, with the same seqs.
    first = await clients(instance_urls["events2"])
    replayed = await first.resume(bob.token, session_id, 3)
    assert [(f["d"]["text"], f["s"]) for f in replayed] == [("a2", 4), ("a3", 5)]  # then RESUMED is 6
    await first.drop()
    await send(api, alice, chat_id, "a4")

    # It saw a2 (4) of that replay only: a3 again, then a4.
    second = await clients(instance_urls["events1"])
    replayed = await second.resume(bob.token, session_id, 4)
    assert [(f["d"]["text"], f["s"]) for f in replayed] == [("a3", 5), ("a4", 6)]
    await second.drop()

    # And from the RESUMED just before (seq 7): nothing to replay.
    third = await clients(instance_urls["events2"])
    assert await third.resume(bob.token, session_id, 7) == []
    assert third.seq == 8


@pytest.mark.parametrize("placement", ["same instance", "other instance"])
async def test_a_resumed_session_closes_its_older_connection(
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    make_user: Any,
    clients: Any,
    instance_urls: dict[str, str],
    placement: str,
) -> None:
    """RESUME of a session whose connection is still open closes that connection 4000 (docs:
    `session resumed elsewhere`), whichever instance each is on; only the new one gets events.
    On the same instance the old connection stayed open, answering not even a heartbeat."""
    alice, bob = await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    old = await identified(clients, instance_urls["events1"], bob)
    session_id, seq = old.session_id, old.seq
    assert session_id is not None
    assert seq is not None
    other = "events1" if placement == "same instance" else "events2"
    new = await clients(instance_urls[other])
    assert await new.resume(bob.token, session_id, seq) == []
    closed = await old.closed(timeout=15)
    assert (closed.code, closed.reason) == (4000, "session resumed elsewhere")
    await send(api, alice, chat_id, "after the resume")
    assert await texts(new, 1) == ["after the resume"]


async def test_resume_refusals(
    api: httpx.AsyncClient, make_user: Any, clients: Any, events_url: str, redis: aioredis.Redis
) -> None:
    alice, bob = await make_user(), await make_user()
    alice_ws = await identified(clients, events_url, alice)
    session_id = alice_ws.session_id
    assert session_id is not None
    await alice_ws.close()

    # Another user's session: op 9, and the connection can identify anew.
    other = await clients(events_url)
    await other.send(6, {"token": bob.token, "session_id": session_id, "seq": 1})
    assert await other.frame() == {"op": 9, "d": False, "s": None, "t": None}
    await other.identify(bob.token)

    for bad_session in ("no-such-session", "x" * 200, ""):
        client = await clients(events_url)
        await client.send(6, {"token": alice.token, "session_id": bad_session, "seq": 1})
        assert (await client.frame())["op"] == 9

    # A seq from the future.
    client = await clients(events_url)
    await client.send(6, {"token": alice.token, "session_id": session_id, "seq": 50})
    assert (await client.closed()).code == 4007
    # A seq below anything the session sent (READY is 1), and seqs that are not integers.
    for bad_seq in (0, "1", 1.0, None, True):
        client = await clients(events_url)
        await client.send(6, {"token": alice.token, "session_id": session_id, "seq": bad_seq})
        assert (await client.closed()).code == 4007, bad_seq

    # Outside the window: the record is gone, op 9.
    deadline = time.monotonic() + RESUME_WINDOW + 20
    while await redis.exists(session_key(session_id)):
        assert time.monotonic() < deadline, "the resume record outlived the window"
        await asyncio.sleep(0.2)
    client = await clients(events_url)
    await client.send(6, {"token": alice.token, "session_id": session_id, "seq": 1})
    assert (await client.frame())["op"] == 9


# ---- faults ------------------------------------------------------------------------------------------------
async def test_redis_restarted_in_the_middle_delays_events_without_losing_or_doubling(
    api: httpx.AsyncClient,
    make_user: Any,
    clients: Any,
    instance_urls: dict[str, str],
    stack: Stack,
    db: asyncpg.Connection,
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    watchers = [
        await identified(clients, url, user) for url in instance_urls.values() for user in (alice, bob)
    ]
    await send(api, alice, chat_id, "before")
    for client in watchers:
        assert await texts(client, 1) == ["before"]

    await asyncio.to_thread(stack.stop_redis)
    try:
        during = [f"during {i}" for i in range(5)]
        for text in during:
            await send(api, bob, chat_id, text)
    finally:
        await asyncio.to_thread(stack.start_redis)
    await send(api, alice, chat_id, "after")
    for client in watchers:
        assert await texts(client, 6) == [*during, "after"]
    # Nothing more (no second copy): the next event is the next message.
    await send(api, alice, chat_id, "last")
    for client in watchers:
        assert await texts(client, 1) == ["last"]


async def test_a_republished_batch_is_not_delivered_twice(
    api: httpx.AsyncClient,
    make_user: Any,
    clients: Any,
    events_url: str,
    redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:
    """What a relay that died between publishing and deleting does on its next run: the same
    outbox ids again. The publication script drops them."""
    alice, bob = await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    bob_ws = await identified(clients, events_url, bob)
    message_id = await send(api, alice, chat_id, "once")
    first = await bob_ws.dispatch()
    assert first["d"]["text"] == "once"
    event_ids = await redis.xrevrange(f"chat:ev:u:{bob.id}", "+", "-", count=1)
    event_id = event_ids[0][1][b"e"].decode()
    payload = json.dumps(first["d"])
    published = await EventPublisher(redis).publish(
        [Event(event_id, "MESSAGE_CREATE", [alice.id, bob.id], payload)]
    )
    assert published == 0
    await send(api, alice, chat_id, "next")
    assert await texts(bob_ws, 1) == ["next"]
    assert message_id == first["d"]["id"]


async def test_graceful_stop_sends_reconnect_and_the_client_resumes_elsewhere(
    api: httpx.AsyncClient, make_user: Any, clients: Any, instance_urls: dict[str, str], events_url: str,
    stack: Stack, db: asyncpg.Connection,
) -> None:  # fmt: skip
    alice, bob = await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    bob_ws = await identified(clients, instance_urls["events1"], bob)
    await send(api, alice, chat_id, "before")
    assert await texts(bob_ws, 1) == ["before"]

    # SIGTERM, as an orchestrator stops an instance (the supervisor then starts it again).
    process = stack.processes["events1"]
    process.send_signal(signal.SIGTERM)
    try:
        reconnect = await bob_ws.frame()
        assert reconnect == {"op": 7, "d": None, "s": None, "t": None}
        await bob_ws.closed()
        await send(api, alice, chat_id, "while moving")
        # nginx sends the new connection to the instance that is up.
        moved = await clients(events_url)
        assert bob_ws.session_id is not None
        assert bob_ws.seq is not None
        replayed = await moved.resume(bob.token, bob_ws.session_id, bob_ws.seq)
        assert [frame["d"]["text"] for frame in replayed] == ["while moving"]
        moved.beat(HEARTBEAT_EVERY)
        await send(api, alice, chat_id, "after")
        assert await texts(moved, 1) == ["after"]
    finally:
        await asyncio.to_thread(process.wait, 60)
        await asyncio.to_thread(stack.wait_healthy, ["events1"], 60)


async def test_an_instance_killed_outright_loses_its_clients_nothing(
    api: httpx.AsyncClient,
    make_user: Any,
    clients: Any,
    instance_urls: dict[str, str],
    stack: Stack,
    db: asyncpg.Connection,
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await chat_between(api, db, alice, bob)
    on_killed = [await identified(clients, instance_urls["events1"], user) for user in (alice, bob)]
    for i in range(3):
        await send(api, alice, chat_id, f"before {i}")
    for client in on_killed:
        assert await texts(client, 3) == ["before 0", "before 1", "before 2"]

    stack.kill_instance("events1")
    for client in on_killed:
        await client.closed()
    missed = [f"missed {i}" for i in range(3)]
    for text in missed:
        await send(api, bob, chat_id, text)
    try:
        for client, user in zip(on_killed, (alice, bob), strict=True):
            survivor = await clients(instance_urls["events2"])
            assert client.session_id is not None
            assert client.seq is not None
            replayed = await survivor.resume(user.token, client.session_id, client.seq)
            assert [frame["d"]["text"] for frame in replayed] == missed
    finally:
        await asyncio.to_thread(stack.wait_healthy, ["events1"], 60)


def unread_websocket(port: int, path: str) -> socket.socket:
    """A websocket client that stops reading after HELLO: a tiny receive buffer, the handshake
    done by hand."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            # Straight to the instance, as nginx connects (common/boundary.py).
            + "".join(f"{name}: {value}\r\n" for name, value in trusted.edge_headers().items())
            + "\r\n"
        ).encode()
    )
    received = b""
    while b"heartbeat_interval" not in received:  # the 101, then HELLO
        chunk = sock.recv(4096)
        assert chunk, f"the instance closed the handshake: {received[:200]!r}"
        received += chunk
    return sock


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    if len(payload) < 126:
        header = bytes([0x81, 0x80 | len(payload)])
    else:
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_client_that_does_not_read_is_closed_past_its_queue_and_can_resume(
    api: httpx.AsyncClient, make_user: Any, clients: Any, stack: Stack, redis: aioredis.Redis
) -> None:
    bob = await make_user()
    port = stack.config.ports["events2"]
    sock = await asyncio.to_thread(unread_websocket, port, "/events/")
    identify = json.dumps({"op": 2, "d": {"token": bob.token}})
    await asyncio.to_thread(sock.sendall, masked_text_frame(identify))
    async with trusted.internal_client() as http:
        url = stats_url(stack, "events2")
        deadline = time.monotonic() + 15
        while (await http.get(url)).json()["sessions"] == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        session_id = None
        keys = [key async for key in redis.scan_iter("chat:ev:s:*")]
        for key in keys:
            if await redis.hget(key, "u") == str(bob.id).encode():
                session_id = key.decode().removeprefix("chat:ev:s:")
        assert session_id is not None
        # 64 KiB events, straight into the streams as the relay would publish them.
        publisher = EventPublisher(redis)
        big = json.dumps({"chat_id": 1, "user_id": 1, "timestamp": "x" * 65536})
        sessions = 1
        for _ in range(400):
            await publisher.publish_ephemeral(Event("", "TYPING_START", [bob.id], big))
            stats = (await http.get(url)).json()
            assert stats["queued_frames"] <= QUEUE_LIMIT + 1
            sessions = stats["sessions"]
            if sessions == 0:
                break
        # 400 frames of 64 KiB are far more than the socket buffers and the queue hold, so the
        # session was told to close; the close itself waits on a socket nobody reads (the
        # websocket's close timeout), so its end is awaited, not assumed within the burst.
        deadline = time.monotonic() + 60
        while sessions != 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            sessions = (await http.get(url)).json()["sessions"]
        assert sessions == 0, "a client that reads nothing was never closed"
    sock.close()
    # It resumes, and the events it did not read come again.
    resumed = await clients(f"ws://127.0.0.1:{port}/events/", max_size=None)
    replayed = await resumed.resume(bob.token, session_id, 1)
    assert replayed
    assert all(frame["t"] == "TYPING_START" for frame in replayed)


async def test_sessions_opened_and_dropped_leave_nothing_behind(
    make_user: Any, stack: Stack, instance_urls: dict[str, str], redis: aioredis.Redis
) -> None:
    users = [await make_user() for _ in range(5)]
    limit = asyncio.Semaphore(50)
    session_ids: list[str] = []

    async def one(index: int) -> None:
        url = instance_urls["events1" if index % 2 else "events2"]
        async with limit:
            client = await EventsClient.connect(url, additional_headers=trusted.edge_headers())
            ready = await client.identify(users[index % len(users)].token)
            session_ids.append(ready["d"]["session_id"])
            if index % 3 == 0:
                await client.drop()  # gone without a word
            else:
                await client.close()

    await asyncio.gather(*(one(i) for i in range(500)))
    assert len(session_ids) == 500
    async with trusted.internal_client() as http:
        for name in ("events1", "events2"):
            deadline = time.monotonic() + 15
            while True:
                stats = (await http.get(stats_url(stack, name))).json()
                if stats["connections"] == 0 and stats["sessions"] == 0:
                    break
                assert time.monotonic() < deadline, stats
                await asyncio.sleep(0.05)
            assert stats["users"] == 0
            assert stats["queued_frames"] == 0
            assert stats["writers"] == 0
    deadline = time.monotonic() + RESUME_WINDOW + 20
    while True:
        left = sum([await redis.exists(session_key(sid)) for sid in session_ids])
        if left == 0:
            break
        assert time.monotonic() < deadline, f"{left} resume records outlived the window"
        await asyncio.sleep(0.25)


def test_the_service_readme_documents_every_setting() -> None:
    from events_service.settings import EventsSettings

    readme = (Path(__file__).resolve().parents[1] / "events_service" / "README.md").read_text()
    shared = {"environment", "log_level", "log_format", "database_url", "db_pool_size",
              "db_connect_timeout_seconds", "db_statement_timeout_seconds", "token_issuer",
              "token_audience", "redis_url", "instance_id",
              # The trust boundary's, read by every service (README: Security).
              "edge_secret", "edge_secret_file", "service_secret", "service_secret_file"}  # fmt: skip
    for name in set(EventsSettings.model_fields) - shared:
        assert f"EVENTS_{name.upper().removesuffix('_FILE')}" in readme, name
