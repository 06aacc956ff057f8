"""One message, edit, delete and send-once nonces through nginx (API.md 15-18), with every bad
input the issue lists. The stack runs two chat service instances, so racing requests land on
both."""

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from events_client import EventsClient
from polite_client import send_retrying

pytestmark = pytest.mark.usefixtures("stack")

MISSING_ID = 9_000_000_000_000_000


async def start_chat(api: httpx.AsyncClient, sender: Any, recipient: Any) -> int:
    response = await api.post(
        "/private/start-chat/", json={"recipient_id": recipient.id}, headers=sender.headers
    )
    assert response.status_code == 200, response.text
    return int(response.json()["chat_id"])


async def send(api: httpx.AsyncClient, sender: Any, chat_id: int, text: str, **extra: Any) -> httpx.Response:
    """A send by a polite client (it waits out the rate limit), answered 200."""
    body = {"text": text, **extra}
    response = await send_retrying(
        api, "POST", f"/private/add-message/{chat_id}/", json=body, headers=sender.headers
    )
    assert response.status_code == 200, response.text
    return response


async def sent_id(api: httpx.AsyncClient, sender: Any, chat_id: int, text: str, **extra: Any) -> int:
    return int((await send(api, sender, chat_id, text, **extra)).json()["id"])


def path(chat_id: int, message_id: int | str) -> str:
    return f"/private/{chat_id}/messages/{message_id}/"


async def page(api: httpx.AsyncClient, user: Any, chat_id: int) -> list[dict[str, Any]]:
    response = await api.get(f"/private/{chat_id}/messages", headers=user.headers)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


async def snapshot(db: asyncpg.Connection, chat_id: int) -> list[Any]:
    """What a refused request could have changed in a chat: its messages, its activity time and
    its nonces. (Its events are checked at the gateway, test_changes_reach_the_other_member_as_events;
    outbox rows come and go with the relay.)"""
    return [
        [
            tuple(row)
            for row in await db.fetch(
                "SELECT id, text, edited_at, answer_id FROM private_chat.messages"
                " WHERE chat_id = $1 ORDER BY id",
                chat_id,
            )
        ],
        await db.fetchval("SELECT last_activity_at FROM private_chat.chats WHERE id = $1", chat_id),
        await db.fetchval("SELECT count(*) FROM private_chat.send_nonces WHERE chat_id = $1", chat_id),
    ]


def user_object(user: Any) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "avatar_url": None}


def error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


@pytest.fixture
async def conversation(api: httpx.AsyncClient, make_user: Any) -> dict[str, Any]:
    """alice and bob in a chat; alice's message, bob's reply to it."""
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob)
    original = await sent_id(api, alice, chat_id, "original")
    reply = await sent_id(api, bob, chat_id, "a reply", message_answer_id=original)
    return {
        "alice": alice,
        "bob": bob,
        "chat": chat_id,
        "original": original,
        "reply": reply,
    }


# ---- one message --------------------------------------------------------------------------------


async def test_one_message_is_the_page_entry(api: httpx.AsyncClient, conversation: dict[str, Any]) -> None:
    c = conversation
    listed = await page(api, c["alice"], c["chat"])
    for viewer in (c["alice"], c["bob"]):
        for spelling in (path(c["chat"], c["reply"]), path(c["chat"], c["reply"]).rstrip("/")):
            response = await api.get(spelling, headers=viewer.headers)
            assert response.status_code == 200, response.text
            assert response.json() == listed[0]
    assert listed[0] == {
        "id": c["reply"],
        "text": "a reply",
        "answer": c["original"],
        "chat_id": c["chat"],
        "message_owner": user_object(c["bob"]),
        "created_at": listed[0]["created_at"],
        "edited_at": None,
    }


async def test_one_message_refusals(
    api: httpx.AsyncClient, make_user: Any, conversation: dict[str, Any]
) -> None:
    c = conversation
    carol = await make_user()  # in a chat with alice; a stranger to alice and bob's chat
    elsewhere = await start_chat(api, c["alice"], carol)
    foreign = await sent_id(api, c["alice"], elsewhere, "elsewhere")
    error(await api.get(path(c["chat"], c["original"]), headers=carol.headers), 403, "not_chat_member")
    error(await api.get(path(c["chat"], MISSING_ID), headers=carol.headers), 403, "not_chat_member")
    error(await api.get(path(c["chat"], foreign), headers=c["bob"].headers), 404, "message_not_found")
    error(await api.get(path(c["chat"], MISSING_ID), headers=c["bob"].headers), 404, "message_not_found")
    error(await api.get(path(MISSING_ID, c["original"]), headers=c["bob"].headers), 404, "chat_not_found")


# ---- edit ---------------------------------------------------------------------------------------


async def test_the_author_edits(
    api: httpx.AsyncClient, db: asyncpg.Connection, conversation: dict[str, Any]
) -> None:
    c = conversation
    before = await page(api, c["bob"], c["chat"])
    response = await api.patch(
        path(c["chat"], c["original"]), json={"text": "  the original, fixed \n"}, headers=c["alice"].headers
    )
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["text"] == "the original, fixed"  # trimmed, as a send is
    assert edited["edited_at"] is not None
    assert datetime.fromisoformat(edited["edited_at"]) >= datetime.fromisoformat(edited["created_at"])
    assert {
        key: value for key, value in edited.items() if key not in ("text", "edited_at", "created_at")
    } == {
        "id": c["original"],
        "answer": None,
        "chat_id": c["chat"],
        "message_owner": user_object(c["alice"]),
    }
    after = await page(api, c["bob"], c["chat"])
    assert [m["id"] for m in after] == [m["id"] for m in before]
    assert after[1]["text"] == "the original, fixed"
    assert datetime.fromisoformat(after[1]["edited_at"]) == datetime.fromisoformat(edited["edited_at"])
    assert datetime.fromisoformat(after[1]["created_at"]) == datetime.fromisoformat(before[1]["created_at"])
    assert after[0] == before[0]  # the reply is untouched
    shown = (await api.get(path(c["chat"], c["original"]), headers=c["bob"].headers)).json()
    assert shown == after[1]
    # Edited twice: edited_at moves on.
    again = await api.patch(
        path(c["chat"], c["original"]).rstrip("/"), json={"text": "third"}, headers=c["alice"].headers
    )
    assert again.status_code == 200
    assert datetime.fromisoformat(again.json()["edited_at"]) >= datetime.fromisoformat(edited["edited_at"])


async def test_only_the_author_edits(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, conversation: dict[str, Any]
) -> None:
    c = conversation
    carol = await make_user()  # in a chat with alice; a stranger to alice and bob's chat
    elsewhere = await start_chat(api, c["alice"], carol)
    foreign = await sent_id(api, c["alice"], elsewhere, "elsewhere")
    before = await snapshot(db, c["chat"])
    body = {"text": "hijacked"}
    error(
        await api.patch(path(c["chat"], c["original"]), json=body, headers=c["bob"].headers),
        403,
        "not_message_author",
    )
    error(
        await api.patch(path(c["chat"], c["original"]), json=body, headers=carol.headers),
        403,
        "not_chat_member",
    )
    error(
        await api.patch(path(c["chat"], MISSING_ID), json=body, headers=carol.headers),
        403,
        "not_chat_member",
    )
    error(
        await api.patch(path(c["chat"], foreign), json=body, headers=c["alice"].headers),
        404,
        "message_not_found",
    )
    error(
        await api.patch(path(c["chat"], MISSING_ID), json=body, headers=c["alice"].headers),
        404,
        "message_not_found",
    )
    error(
        await api.patch(path(MISSING_ID, c["original"]), json=body, headers=c["alice"].headers),
        404,
        "chat_not_found",
    )
    russian = await api.patch(
        path(c["chat"], c["original"]), json=body, headers={**c["bob"].headers, "Accept-Language": "ru"}
    )
    assert russian.json() == {
        "detail": "Изменить сообщение может только его автор",
        "code": "not_message_author",
    }
    assert await snapshot(db, c["chat"]) == before


BAD_EDITS: list[Any] = [
    None,
    {},
    {"text": ""},
    {"text": "   \n\t\u3000"},
    {"text": "x" * 2001},
    {"text": " " + "x" * 2001 + " "},
    {"text": None},
    {"text": 5},
    {"text": ["a"]},
    {"text": "nul\x00inside"},
    {"text": "fine", "message_answer_id": 1},  # only text can change: extra fields are refused
    {"text": "fine", "nonce": "x"},
    "just a string",
    ["text"],
]


async def test_bad_edits_are_422_and_change_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, conversation: dict[str, Any]
) -> None:
    c = conversation
    before = await snapshot(db, c["chat"])
    target = path(c["chat"], c["original"])
    for body in BAD_EDITS:
        if body is None:
            response = await api.patch(target, headers=c["alice"].headers)
        else:
            response = await api.patch(target, json=body, headers=c["alice"].headers)
        assert response.status_code == 422, (body, response.text)
        assert isinstance(response.json()["detail"], list)
    assert await snapshot(db, c["chat"]) == before


async def test_an_edit_with_a_lone_surrogate_is_422(
    api: httpx.AsyncClient, db: asyncpg.Connection, conversation: dict[str, Any]
) -> None:
    c = conversation
    before = await snapshot(db, c["chat"])
    response = await api.patch(
        path(c["chat"], c["original"]),
        content=b'{"text": "broken \\ud800 surrogate"}',
        headers={**c["alice"].headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert await snapshot(db, c["chat"]) == before


async def test_the_longest_edit_fits(api: httpx.AsyncClient, conversation: dict[str, Any]) -> None:
    c = conversation
    longest = "ё" * 2000
    response = await api.patch(
        path(c["chat"], c["original"]), json={"text": f" {longest} "}, headers=c["alice"].headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["text"] == longest


# ---- delete -------------------------------------------------------------------------------------


async def test_the_author_deletes(
    api: httpx.AsyncClient, db: asyncpg.Connection, conversation: dict[str, Any]
) -> None:
    c = conversation
    response = await api.delete(path(c["chat"], c["original"]), headers=c["alice"].headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    # Gone from pages and from the message route, for both members.
    for viewer in (c["alice"], c["bob"]):
        listed = await page(api, viewer, c["chat"])
        assert [m["id"] for m in listed] == [c["reply"]]
        # The reply keeps the id of what it answered (a client shows "original message deleted").
        assert listed[0]["answer"] == c["original"]
        error(await api.get(path(c["chat"], c["original"]), headers=viewer.headers), 404, "message_not_found")
    # Its text is gone from the database, not hidden.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM private_chat.messages WHERE chat_id = $1 AND id = $2",
            c["chat"],
            c["original"],
        )
        == 0
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM private_chat.messages WHERE chat_id = $1 AND text = 'original'", c["chat"]
        )
        == 0
    )
    # Deleting twice, editing or answering it: 404.
    error(
        await api.delete(path(c["chat"], c["original"]), headers=c["alice"].headers), 404, "message_not_found"
    )
    error(
        await api.patch(path(c["chat"], c["original"]), json={"text": "back"}, headers=c["alice"].headers),
        404,
        "message_not_found",
    )
    late = await api.post(
        f"/private/add-message/{c['chat']}/",
        json={"text": "late", "message_answer_id": c["original"]},
        headers=c["bob"].headers,
    )
    error(late, 404, "message_not_found")
    # Without the trailing slash too.
    assert (
        await api.delete(path(c["chat"], c["reply"]).rstrip("/"), headers=c["bob"].headers)
    ).status_code == 204
    assert await page(api, c["alice"], c["chat"]) == []


async def test_only_the_author_deletes(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, conversation: dict[str, Any]
) -> None:
    c = conversation
    carol = await make_user()  # in a chat with alice; a stranger to alice and bob's chat
    elsewhere = await start_chat(api, c["alice"], carol)
    foreign = await sent_id(api, c["alice"], elsewhere, "elsewhere")
    before = await snapshot(db, c["chat"])
    error(
        await api.delete(path(c["chat"], c["original"]), headers=c["bob"].headers), 403, "not_message_author"
    )
    error(await api.delete(path(c["chat"], c["original"]), headers=carol.headers), 403, "not_chat_member")
    error(await api.delete(path(c["chat"], foreign), headers=c["alice"].headers), 404, "message_not_found")
    error(await api.delete(path(c["chat"], MISSING_ID), headers=c["alice"].headers), 404, "message_not_found")
    error(
        await api.delete(path(MISSING_ID, c["original"]), headers=c["alice"].headers), 404, "chat_not_found"
    )
    assert await snapshot(db, c["chat"]) == before
    assert (await api.get(path(elsewhere, foreign), headers=carol.headers)).status_code == 200


async def test_bad_ids_are_422(
    api: httpx.AsyncClient, db: asyncpg.Connection, conversation: dict[str, Any]
) -> None:
    c = conversation
    before = await snapshot(db, c["chat"])
    for bad in ("abc", "-1", "0", "1.5", "1e3", str(2**63)):
        for target in (path(c["chat"], bad), path(bad, c["original"])):
            responses = [
                await api.get(target, headers=c["alice"].headers),
                await api.patch(target, json={"text": "x"}, headers=c["alice"].headers),
                await api.delete(target, headers=c["alice"].headers),
            ]
            for response in responses:
                assert response.status_code == 422, (target, response.text)
    assert await snapshot(db, c["chat"]) == before


async def test_every_message_route_needs_a_token(
    api: httpx.AsyncClient, db: asyncpg.Connection, conversation: dict[str, Any]
) -> None:
    c = conversation
    before = await snapshot(db, c["chat"])
    target = path(c["chat"], c["original"])
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"X-User-Id": str(c["alice"].id)}):
        for response in (
            await api.get(target, headers=headers),
            await api.patch(target, json={"text": "x"}, headers=headers),
            await api.delete(target, headers=headers),
        ):
            assert response.status_code == 401, response.text
            assert "original" not in response.text
    assert await snapshot(db, c["chat"]) == before


async def test_typing_refusals(api: httpx.AsyncClient, make_user: Any, conversation: dict[str, Any]) -> None:
    """Typing (API.md 19) in a chat that does not exist, with a malformed id, as a stranger, without
    a token. (The event itself: tests/test_events.py.)"""
    c = conversation
    mallory = await make_user()
    error(await api.post(f"/private/{MISSING_ID}/typing/", headers=c["alice"].headers), 404, "chat_not_found")
    error(await api.post(f"/private/{c['chat']}/typing/", headers=mallory.headers), 403, "not_chat_member")
    for bad in ("abc", "-1", "0", "1.5", str(2**63)):
        response = await api.post(f"/private/{bad}/typing/", headers=c["alice"].headers)
        assert response.status_code == 422, (bad, response.text)
    assert (await api.post(f"/private/{c['chat']}/typing/")).status_code == 401
    typed = await api.post(f"/private/{c['chat']}/typing", headers=c["bob"].headers)
    assert typed.status_code == 204
    # Typing is not rate limited (API.md 21 limits sending and starting chats).
    assert "X-RateLimit-Limit" not in typed.headers


# ---- send once ----------------------------------------------------------------------------------


async def test_racing_sends_with_one_nonce_store_one_message(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob)
    body = {"text": "sent once", "nonce": "6f1c2a0e-retry"}
    # Eight clients (separate connections, so nginx spreads them over both instances).
    clients = [httpx.AsyncClient(base_url=str(api.base_url), timeout=30) for _ in range(8)]
    try:
        responses = await asyncio.gather(
            *(
                client.post(f"/private/add-message/{chat_id}/", json=body, headers=alice.headers)
                for client in clients
            )
        )
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    answers = {(r.json()["detail"], r.json()["id"]) for r in responses}
    assert len(answers) == 1
    [(_, message_id)] = answers
    assert [(m["id"], m["text"]) for m in await page(api, bob, chat_id)] == [(message_id, "sent once")]
    # Later repeats too (a retry after a timeout), whatever their text; another nonce is a new message.
    again = await send(api, alice, chat_id, "different text", nonce="6f1c2a0e-retry")
    assert again.json() == responses[0].json()
    other = await sent_id(api, alice, chat_id, "sent once", nonce="another")
    assert other != message_id
    # The nonce is the author's in this chat: bob's same nonce is his own message.
    assert await sent_id(api, bob, chat_id, "mine", nonce="6f1c2a0e-retry") not in (message_id, other)
    assert len(await page(api, bob, chat_id)) == 3


async def test_bad_nonces_are_422_and_store_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob)
    before = await snapshot(db, chat_id)
    for nonce in ("", "x" * 65, 12345, 1.5, True, ["a"], {"n": 1}, "nul\x00nonce"):
        response = await api.post(
            f"/private/add-message/{chat_id}/", json={"text": "hi", "nonce": nonce}, headers=alice.headers
        )
        assert response.status_code == 422, (nonce, response.text)
    assert await snapshot(db, chat_id) == before


async def test_nonce_bounds(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob)
    for nonce in ("1", "я" * 64, " spaced "):
        first = await sent_id(api, alice, chat_id, "hi", nonce=nonce)
        assert await sent_id(api, alice, chat_id, "hi", nonce=nonce) == first
    # Compared exactly: not trimmed, not case-folded.
    assert await sent_id(api, alice, chat_id, "hi", nonce="spaced") != await sent_id(
        api, alice, chat_id, "hi", nonce="Spaced"
    )
    # null is no nonce at all.
    assert await sent_id(api, alice, chat_id, "hi", nonce=None) != await sent_id(
        api, alice, chat_id, "hi", nonce=None
    )


# ---- the events of these changes, at the gateway ------------------------------------------------


async def test_changes_reach_the_other_member_as_events(
    api: httpx.AsyncClient, base_url: str, make_user: Any, stack: Any
) -> None:
    """Racing retries of one send, an edit, a refused edit and a delete: the other member's session
    gets exactly CHAT_CREATE, MESSAGE_CREATE (with the nonce), MESSAGE_UPDATE (the edit's answer),
    MESSAGE_DELETE, in that order and nothing else."""
    if "events1" not in getattr(stack.config, "ports", {}):
        pytest.skip("this stack starts no events instances")
    alice, bob = await make_user(), await make_user()
    session = await EventsClient.connect(base_url.replace("http://", "ws://") + "/events/")
    try:
        session.beat(session.hello["d"]["heartbeat_interval"] / 2000)
        # Identified before the chat exists: its CHAT_CREATE comes first. (A session identified
        # just after the start may get it too, once the outbox relays it, or may not.)
        await session.identify(bob.token)
        chat_id = await start_chat(api, alice, bob)
        chat_created = await session.dispatch()
        assert (chat_created["t"], chat_created["d"]["id"]) == ("CHAT_CREATE", chat_id)
        clients = [httpx.AsyncClient(base_url=base_url, timeout=30) for _ in range(8)]
        try:
            sent = await asyncio.gather(
                *(
                    client.post(
                        f"/private/add-message/{chat_id}/",
                        json={"text": "hello", "nonce": "ev-1"},
                        headers=alice.headers,
                    )
                    for client in clients
                )
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))
        assert {r.status_code for r in sent} == {200}
        message_id = sent[0].json()["id"]
        target = path(chat_id, message_id)
        edited = await api.patch(target, json={"text": "hello, edited"}, headers=alice.headers)
        assert edited.status_code == 200
        assert (await api.patch(target, json={"text": "not mine"}, headers=bob.headers)).status_code == 403
        assert (await api.delete(target, headers=alice.headers)).status_code == 204

        received = [await session.dispatch() for _ in range(3)]
        assert [frame["t"] for frame in received] == ["MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"]
        created, updated, deleted = (frame["d"] for frame in received)
        assert (created["id"], created["text"], created["nonce"], created["edited_at"]) == (
            message_id,
            "hello",
            "ev-1",
            None,
        )
        assert parse_times(updated) == parse_times(edited.json())
        assert deleted == {"id": message_id, "chat_id": chat_id}
        # Nothing else follows (a second MESSAGE_CREATE of the retries, an event of the refusal).
        with pytest.raises(TimeoutError):
            await session.dispatch(timeout=1.5)
    finally:
        await session.close()


def parse_times(message: dict[str, Any]) -> dict[str, Any]:
    return {
        **message,
        **{key: datetime.fromisoformat(message[key]) for key in ("created_at", "edited_at") if message[key]},
    }
