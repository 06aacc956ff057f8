"""Private chats through nginx: start a chat, send and page messages, chat info, my chats
(API.md 8-12), with every bad input the issue lists."""

import asyncio
import io
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.usefixtures("stack")

MISSING_USER_ID = 9_000_000_000_000_000
MISSING_CHAT_ID = 9_000_000_000_000_000


async def start_chat(api: httpx.AsyncClient, sender: Any, recipient_id: int, text: str | None = None) -> int:
    body: dict[str, Any] = {"recipient_id": recipient_id}
    if text is not None:
        body["text"] = text
    response = await api.post("/private/start-chat/", json=body, headers=sender.headers)
    assert response.status_code == 200, response.text
    return int(response.json()["chat_id"])


async def send(
    api: httpx.AsyncClient, sender: Any, chat_id: int, text: str, answer: int | None = None
) -> int:
    body: dict[str, Any] = {"text": text}
    if answer is not None:
        body["message_answer_id"] = answer
    response = await api.post(f"/private/add-message/{chat_id}/", json=body, headers=sender.headers)
    assert response.status_code == 200, response.text
    assert response.json()["detail"] == "Success add."
    return int(response.json()["id"])


async def page(api: httpx.AsyncClient, user: Any, chat_id: int, **params: Any) -> list[dict[str, Any]]:
    response = await api.get(f"/private/{chat_id}/messages", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


async def snapshot(db: asyncpg.Connection) -> tuple[int, int, Any]:
    """Everything a bad request could have changed."""
    chats = await db.fetchval("SELECT count(*) FROM private_chat.chats")
    messages = await db.fetchval("SELECT count(*) FROM private_chat.messages")
    activity = await db.fetchval("SELECT max(last_activity_at) FROM private_chat.chats")
    return chats, messages, activity


def user_object(user: Any) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "avatar_url": None}


# ---- start-chat ---------------------------------------------------------------------------------


async def test_start_chat_is_idempotent_for_the_pair(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id)
    assert await start_chat(api, alice, bob.id) == chat_id
    assert await start_chat(api, bob, alice.id) == chat_id
    rows = await db.fetch(
        "SELECT id, starter_id FROM private_chat.chats WHERE user_low = $1 AND user_high = $2",
        min(alice.id, bob.id),
        max(alice.id, bob.id),
    )
    assert [(row["id"], row["starter_id"]) for row in rows] == [(chat_id, alice.id)]
    # No text: no message.
    assert await page(api, bob, chat_id) == []


async def test_concurrent_start_chat_gives_one_chat(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()

    async def press(sender: Any, recipient: Any, index: int) -> httpx.Response:
        return await api.post(
            "/private/start-chat/",
            json={"recipient_id": recipient.id, "text": f"hello {index}"},
            headers=sender.headers,
        )

    responses = await asyncio.gather(
        *(press(alice, bob, i) if i % 2 else press(bob, alice, i) for i in range(16))
    )
    assert [r.status_code for r in responses] == [200] * 16
    assert len({r.json()["chat_id"] for r in responses}) == 1
    chat_id = responses[0].json()["chat_id"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM private_chat.chats WHERE user_low = $1 AND user_high = $2",
            min(alice.id, bob.id),
            max(alice.id, bob.id),
        )
        == 1
    )
    # Every request's text became exactly one message of that chat.
    texts = await db.fetch("SELECT text FROM private_chat.messages WHERE chat_id = $1", chat_id)
    assert sorted(row["text"] for row in texts) == sorted(f"hello {i}" for i in range(16))


async def test_start_chat_with_text_adds_the_first_message(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    response = await api.post(
        "/private/start-chat/", json={"recipient_id": bob.id, "text": "  hi bob  "}, headers=alice.headers
    )
    assert response.status_code == 200
    chat_id = response.json()["chat_id"]
    [message] = await page(api, bob, chat_id)
    assert message["id"] == response.json()["message_id"]
    assert message["text"] == "hi bob"  # stored trimmed
    assert message["answer"] is None
    assert message["chat_id"] == chat_id
    assert message["message_owner"] == user_object(alice)
    # An existing chat: the text is added to it too.
    assert await start_chat(api, bob, alice.id, "hi alice") == chat_id
    assert [m["text"] for m in await page(api, alice, chat_id)] == ["hi alice", "hi bob"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"recipient_id": MISSING_USER_ID}, 404),
        ({"recipient_id": MISSING_USER_ID, "text": "hello"}, 404),
        ({"recipient_id": "self"}, 400),
        ({"recipient_id": "self", "text": "hello"}, 400),
        ({"recipient_id": "abc"}, 422),
        ({"recipient_id": 1.5}, 422),
        ({"recipient_id": -1}, 422),
        ({"recipient_id": 0}, 422),
        ({"recipient_id": 2**63}, 422),
        ({"recipient_id": None}, 422),
        ({}, 422),
        ({"recipient_id": "peer", "text": ""}, 422),
        ({"recipient_id": "peer", "text": "   \n\t "}, 422),
        ({"recipient_id": "peer", "text": "x" * 2001}, 422),
        ({"recipient_id": "peer", "text": 42}, 422),
        ({"recipient_id": "peer", "text": "nul\x00byte"}, 422),
        (None, 422),
        ("not an object", 422),
    ],
)
async def test_start_chat_bad_input_changes_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, body: Any, status: int
) -> None:
    alice, bob = await make_user(), await make_user()
    if isinstance(body, dict):
        body = {
            key: {"self": alice.id, "peer": bob.id}.get(value, value) if key == "recipient_id" else value
            for key, value in body.items()
        }
    before = await snapshot(db)
    if body is None:
        response = await api.post("/private/start-chat/", headers=alice.headers)
    else:
        response = await api.post("/private/start-chat/", json=body, headers=alice.headers)
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    assert await snapshot(db) == before


async def test_start_chat_error_messages_follow_the_language(api: httpx.AsyncClient, make_user: Any) -> None:
    alice = await make_user()
    english = await api.post("/private/start-chat/", json={"recipient_id": alice.id}, headers=alice.headers)
    assert english.json() == {"detail": "You cannot start a chat with yourself", "code": "chat_with_self"}
    russian = await api.post(
        "/private/start-chat/",
        json={"recipient_id": MISSING_USER_ID},
        headers={**alice.headers, "Accept-Language": "ru"},
    )
    assert russian.status_code == 404
    assert russian.json() == {"detail": "Пользователь не найден", "code": "user_not_found"}


async def test_every_endpoint_needs_a_token(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id, "first")
    before = await snapshot(db)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"X-User-Id": str(alice.id)}):
        calls = [
            api.post("/private/start-chat/", json={"recipient_id": bob.id, "text": "x"}, headers=headers),
            api.get(f"/private/{chat_id}/messages", headers=headers),
            api.get(f"/private/{chat_id}/info/", headers=headers),
            api.post(f"/private/add-message/{chat_id}/", json={"text": "x"}, headers=headers),
            api.get("/private/chat-list/", headers=headers),
        ]
        for response in await asyncio.gather(*calls):
            assert response.status_code == 401, response.text
            assert "first" not in response.text
    assert await snapshot(db) == before


# ---- a conversation -----------------------------------------------------------------------------


async def test_two_user_conversation_with_replies_paged_both_ways(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id)
    sent: list[tuple[int, Any, int | None]] = []  # (id, owner, answer), oldest first
    for index in range(23):
        speaker = alice if index % 2 == 0 else bob
        answer = sent[index - 3][0] if index >= 3 and index % 3 == 0 else None
        message_id = await send(api, speaker, chat_id, f"message {index}", answer)
        sent.append((message_id, speaker, answer))
    newest_first = list(reversed(sent))

    def check(messages: list[dict[str, Any]], expected: list[tuple[int, Any, int | None]]) -> None:
        assert [m["id"] for m in messages] == [e[0] for e in expected]
        for message, (message_id, owner, answer) in zip(messages, expected, strict=True):
            assert message["text"] == f"message {sent.index((message_id, owner, answer))}"
            assert message["answer"] == answer
            assert message["chat_id"] == chat_id
            assert message["message_owner"] == user_object(owner)
            assert datetime.fromisoformat(message["created_at"]).utcoffset() is not None
            assert message["edited_at"] is None

    # Default page: newest first, both members see the same.
    everything = await page(api, alice, chat_id)
    check(everything, newest_first)
    assert await page(api, bob, chat_id) == everything
    times = [datetime.fromisoformat(m["created_at"]) for m in everything]
    assert times == sorted(times, reverse=True)

    # limit/offset.
    check(await page(api, bob, chat_id, limit=5), newest_first[:5])
    check(await page(api, bob, chat_id, limit=5, offset=5), newest_first[5:10])
    check(await page(api, bob, chat_id, limit=5, offset=20), newest_first[20:])
    assert await page(api, bob, chat_id, offset=23) == []

    # Backward with `before`: from the newest to the oldest, each page right below the last.
    collected: list[dict[str, Any]] = []
    cursor: int = 2**63 - 1
    while chunk := await page(api, alice, chat_id, limit=4, before=cursor):
        collected += chunk
        cursor = chunk[-1]["id"]
    check(collected, newest_first)

    # Forward with `after`: from the oldest to the newest; each page is listed newest first.
    collected = []
    cursor = sent[0][0]
    while chunk := await page(api, bob, chat_id, limit=4, after=cursor):
        collected = chunk + collected
        cursor = chunk[0]["id"]
    check(collected, newest_first[:-1])  # everything after the first message

    # Both cursors bound a window; `after` anchors it.
    window = await page(api, alice, chat_id, after=sent[5][0], before=sent[12][0], limit=3)
    check(window, [sent[8], sent[7], sent[6]])

    # The reply graph is what was sent.
    replies = await db.fetch(
        "SELECT id, answer_id FROM private_chat.messages WHERE chat_id = $1 AND answer_id IS NOT NULL",
        chat_id,
    )
    assert {(r["id"], r["answer_id"]) for r in replies} == {(m, a) for m, _, a in sent if a is not None}


async def test_reply_must_point_into_the_same_chat(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    ours = await start_chat(api, alice, bob.id)
    theirs = await start_chat(api, alice, carol.id)
    own_message = await send(api, alice, ours, "ours")
    other_message = await send(api, alice, theirs, "theirs")
    before = await snapshot(db)
    for answer in (other_message, MISSING_CHAT_ID, own_message + 10_000_000):
        response = await api.post(
            f"/private/add-message/{ours}/",
            json={"text": "reply", "message_answer_id": answer},
            headers=bob.headers,
        )
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": "Message not found", "code": "message_not_found"}
    assert await snapshot(db) == before
    reply = await send(api, bob, ours, "reply", own_message)
    assert (await page(api, alice, ours, limit=1))[0] == {
        "id": reply,
        "text": "reply",
        "answer": own_message,
        "chat_id": ours,
        "message_owner": user_object(bob),
        "created_at": (await page(api, alice, ours, limit=1))[0]["created_at"],
        "edited_at": None,
    }


# ---- membership and missing chats ----------------------------------------------------------------


async def test_only_members_reach_a_chat(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob, mallory = await make_user(), await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id, "a secret for bob")
    before = await snapshot(db)
    responses = [
        await api.get(f"/private/{chat_id}/messages", headers=mallory.headers),
        await api.get(f"/private/{chat_id}/messages", params={"before": 2**62}, headers=mallory.headers),
        await api.get(f"/private/{chat_id}/info/", headers=mallory.headers),
        await api.post(f"/private/add-message/{chat_id}/", json={"text": "hi"}, headers=mallory.headers),
    ]
    for response in responses:
        assert response.status_code == 403, response.text
        assert response.json() == {"detail": "You are not a member of this chat", "code": "not_chat_member"}
    assert await snapshot(db) == before
    mallory_chats = await api.get("/private/chat-list/", headers=mallory.headers)
    assert mallory_chats.json() == []


async def test_missing_chat_is_404(api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any) -> None:
    alice = await make_user()
    before = await snapshot(db)
    for chat_id in (MISSING_CHAT_ID, 2**63 - 1):
        responses = [
            await api.get(f"/private/{chat_id}/messages", headers=alice.headers),
            await api.get(f"/private/{chat_id}/info/", headers=alice.headers),
            await api.post(f"/private/add-message/{chat_id}/", json={"text": "hi"}, headers=alice.headers),
        ]
        for response in responses:
            assert response.status_code == 404, response.text
            assert response.json() == {"detail": "Chat not found", "code": "chat_not_found"}
    assert await snapshot(db) == before


@pytest.mark.parametrize("chat_id", ["abc", "-1", "0", "1.5", str(2**63), "1e3"])
async def test_bad_chat_ids_are_422(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, chat_id: str
) -> None:
    alice = await make_user()
    before = await snapshot(db)
    responses = [
        await api.get(f"/private/{chat_id}/messages", headers=alice.headers),
        await api.get(f"/private/{chat_id}/info/", headers=alice.headers),
        await api.post(f"/private/add-message/{chat_id}/", json={"text": "hi"}, headers=alice.headers),
    ]
    for response in responses:
        assert response.status_code == 422, response.text
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"limit": -5},
        {"offset": -1},
        {"offset": "x"},
        {"before": -1},
        {"before": 0},
        {"before": "x"},
        {"after": -3},
        {"after": 2**63},
    ],
)
async def test_bad_paging_params_are_422(
    api: httpx.AsyncClient, make_user: Any, params: dict[str, Any]
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id, "hello")
    response = await api.get(f"/private/{chat_id}/messages", params=params, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


async def test_parameters_without_a_value_take_their_defaults(api: httpx.AsyncClient, make_user: Any) -> None:
    """API.md writes `?limit=&offset=`; a client that sends it so gets the defaults."""
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id, "one")
    await send(api, bob, chat_id, "two")
    for query in ("limit=&offset=", "limit=&offset=&before=&after=", "limit&offset", "limit=1&offset="):
        response = await api.get(f"/private/{chat_id}/messages?{query}", headers=alice.headers)
        assert response.status_code == 200, (query, response.text)
        expected = ["two"] if query.startswith("limit=1") else ["two", "one"]
        assert [m["text"] for m in response.json()] == expected, query
    listed = await api.get("/private/chat-list/?limit=&offset=", headers=alice.headers)
    assert listed.status_code == 200, listed.text
    assert {"id": chat_id} in [{"id": chat["id"]} for chat in listed.json()]
    # A required parameter left empty is missing: still a 422.
    search = await api.get("/users/user/?username=", headers=alice.headers)
    assert search.status_code == 422, search.text
    assert search.json()["detail"][0]["type"] == "missing"


async def test_limit_bounds_are_inclusive(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id, "one")
    await send(api, bob, chat_id, "two")
    assert [m["text"] for m in await page(api, alice, chat_id, limit=1)] == ["two"]
    assert [m["text"] for m in await page(api, alice, chat_id, limit=100)] == ["two", "one"]


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"text": ""},
        {"text": "    "},
        {"text": "\n\t \u3000"},
        {"text": "\u200b"},
        {"text": " \ufeff\u200d\u2060 "},
        {"text": "x" * 2001},
        {"text": " " + "x" * 2001 + " "},
        {"text": None},
        {"text": 7},
        {"text": ["a"]},
        {"text": "bad\x00text"},
        {"text": "ok", "message_answer_id": -1},
        {"text": "ok", "message_answer_id": "abc"},
        {"text": "ok", "message_answer_id": 2**63},
    ],
)
async def test_add_message_bad_input_changes_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any, body: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id, "hello")
    before = await snapshot(db)
    if body is None:
        response = await api.post(f"/private/add-message/{chat_id}/", headers=alice.headers)
    else:
        response = await api.post(f"/private/add-message/{chat_id}/", json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert await snapshot(db) == before


async def test_add_message_with_a_lone_surrogate_is_422(
    api: httpx.AsyncClient, db: asyncpg.Connection, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id)
    before = await snapshot(db)
    response = await api.post(
        f"/private/add-message/{chat_id}/",
        content=b'{"text": "broken \\ud800 surrogate"}',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert await snapshot(db) == before


async def test_text_length_is_counted_after_trimming(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id)
    longest = "й" * 2000
    await send(api, alice, chat_id, f"  {longest}\n ")
    await send(api, bob, chat_id, "x")
    assert [m["text"] for m in await page(api, alice, chat_id)] == ["x", longest]


# ---- info and my chats -----------------------------------------------------------------------------


async def test_chat_info(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, bob, alice.id)
    for viewer in (alice, bob):
        response = await api.get(f"/private/{chat_id}/info/", headers=viewer.headers)
        assert response.status_code == 200
        info = response.json()
        assert info["id"] == chat_id
        assert info["chat_starter"] == user_object(bob)
        assert info["chat_recipient"] == user_object(alice)
    # Starting it again from the other side does not change who started it.
    assert await start_chat(api, alice, bob.id) == chat_id
    info = (await api.get(f"/private/{chat_id}/info", headers=alice.headers)).json()
    assert info["chat_starter"]["id"] == bob.id


async def test_chat_list_is_most_recently_active_first(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob, carol, dave = await make_user(), await make_user(), await make_user(), await make_user()
    empty = await api.get("/private/chat-list/", headers=alice.headers)
    assert empty.status_code == 200
    assert empty.json() == []

    with_bob = await start_chat(api, alice, bob.id)
    with_carol = await start_chat(api, carol, alice.id)
    with_dave = await start_chat(api, alice, dave.id)

    async def ids(user: Any, **params: Any) -> list[int]:
        response = await api.get("/private/chat-list/", params=params, headers=user.headers)
        assert response.status_code == 200, response.text
        return [chat["id"] for chat in response.json()]

    # No messages yet: creation time decides.
    assert await ids(alice) == [with_dave, with_carol, with_bob]
    await send(api, bob, with_bob, "wake up")
    assert await ids(alice) == [with_bob, with_dave, with_carol]
    await send(api, alice, with_carol, "hi carol")
    assert await ids(alice) == [with_carol, with_bob, with_dave]
    # start-chat with text on an existing chat is activity too.
    assert await start_chat(api, dave, alice.id, "me too") == with_dave
    assert await ids(alice) == [with_dave, with_carol, with_bob]
    assert await ids(alice, limit=2) == [with_dave, with_carol]
    assert await ids(alice, limit=2, offset=2) == [with_bob]
    assert await ids(bob) == [with_bob]

    listing = (await api.get("/private/chat-list/", headers=carol.headers)).json()
    assert listing[0]["id"] == with_carol
    assert listing[0]["companion"] == user_object(alice)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": "x"}, {"offset": -1}])
async def test_chat_list_bad_params_are_422(
    api: httpx.AsyncClient, make_user: Any, params: dict[str, Any]
) -> None:
    alice = await make_user()
    response = await api.get("/private/chat-list/", params=params, headers=alice.headers)
    assert response.status_code == 422


async def test_user_objects_carry_the_current_avatar(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    chat_id = await start_chat(api, alice, bob.id, "before the avatar")
    image = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 90)).save(image, "PNG")
    uploaded = await api.patch(
        "/users/upload-avatar/",
        files={"avatar_file": ("me.png", image.getvalue(), "image/png")},
        headers=alice.headers,
    )
    assert uploaded.status_code == 200, uploaded.text
    avatar_url = (await api.get("/users/me/", headers=alice.headers)).json()["avatar_url"]
    assert avatar_url
    expected = {"id": alice.id, "username": alice.username, "avatar_url": avatar_url}
    [message] = await page(api, bob, chat_id)
    assert message["message_owner"] == expected
    info = (await api.get(f"/private/{chat_id}/info/", headers=bob.headers)).json()
    assert info["chat_starter"] == expected
    [listed] = (await api.get("/private/chat-list/", headers=bob.headers)).json()
    assert listed["companion"] == expected


async def test_paths_work_with_and_without_the_trailing_slash(api: httpx.AsyncClient, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    started = await api.post("/private/start-chat", json={"recipient_id": bob.id}, headers=alice.headers)
    assert started.status_code == 200
    chat_id = started.json()["chat_id"]
    sent = await api.post(f"/private/add-message/{chat_id}", json={"text": "no slash"}, headers=bob.headers)
    assert sent.status_code == 200
    assert sent.json()["detail"] == "Success add."
    with_slash = await api.get(f"/private/{chat_id}/messages/", headers=alice.headers)
    assert [m["text"] for m in with_slash.json()] == ["no slash"]
    listing = await api.get("/private/chat-list", headers=alice.headers)
    assert [c["id"] for c in listing.json()] == [chat_id]
    info = await api.get(f"/private/{chat_id}/info", headers=alice.headers)
    assert info.json()["id"] == chat_id
