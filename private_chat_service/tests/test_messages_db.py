"""One message, edit, delete and send-once nonces, against a real PostgreSQL: what each statement
writes (the message, its outbox row), races, and the order of a chat's events."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from common.db import close_pool, make_pool
from private_chat_service import repository
from private_chat_service.errors import ChatNotFound, MessageNotFound, NotChatMember, NotMessageAuthor
from private_chat_service.service import PrivateChatService

MISSING = 9_000_000_000_000_000


async def events(raw: asyncpg.Connection, chat_id: int) -> list[tuple[int, str, dict[str, Any]]]:
    rows = await raw.fetch(
        "SELECT id, kind, payload FROM private_chat.outbox WHERE chat_id = $1 ORDER BY id", chat_id
    )
    return [(row["id"], row["kind"], json.loads(row["payload"])) for row in rows]


async def count_messages(raw: asyncpg.Connection, chat_id: int) -> int:
    count: int = await raw.fetchval("SELECT count(*) FROM private_chat.messages WHERE chat_id = $1", chat_id)
    return count


def api_time(value: datetime) -> str:
    """A timestamp as the statements write it into event payloads (always with microseconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parsed(message: dict[str, Any]) -> dict[str, Any]:
    """A message object with its timestamps read (the two JSON writers may differ in digits)."""
    return {
        **message,
        **{
            key: datetime.fromisoformat(message[key]) if message[key] else None
            for key in ("created_at", "edited_at")
        },
    }


async def test_edit_sets_text_and_edited_at_and_announces_the_same_object(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    chat_id, first = await service.start_chat(alice, recipient_id=bob, text="helo")
    assert first is not None
    edited = json.loads(await service.edit_message(alice, chat_id, first, text="  hello  ".strip()))
    shown = await service.message_json(bob, chat_id, first)
    assert shown["text"] == "hello"
    assert shown["edited_at"] is not None
    assert shown["edited_at"] >= shown["created_at"]
    assert edited == {
        **shown,
        "created_at": api_time(shown["created_at"]),
        "edited_at": api_time(shown["edited_at"]),
    }
    *_, (_, kind, payload) = await events(raw, chat_id)
    assert kind == "MESSAGE_UPDATE"
    assert payload == edited
    # The chat's activity is its messages' arrival, not their edits.
    activity = await raw.fetchval("SELECT last_activity_at FROM private_chat.chats WHERE id = $1", chat_id)
    assert activity == shown["created_at"]


async def test_delete_removes_the_row_keeps_replies_and_announces_it(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    chat_id, original = await service.start_chat(alice, recipient_id=bob, text="a secret to take back")
    assert original is not None
    reply = await service.add_message(bob, chat_id, text="what?", answer_id=original)
    newest = await service.add_message(alice, chat_id, text="never mind", answer_id=None)
    view = "SELECT last_message_id FROM private_chat.member_chats WHERE user_id = $1 AND chat_id = $2"
    assert await raw.fetchval(view, bob, chat_id) == newest

    await service.delete_message(alice, chat_id, original)
    assert (
        await raw.fetchval(
            "SELECT count(*) FROM private_chat.messages WHERE chat_id = $1 AND text = $2",
            chat_id,
            "a secret to take back",
        )
        == 0
    )
    *_, (_, kind, payload) = await events(raw, chat_id)
    assert (kind, payload) == ("MESSAGE_DELETE", {"id": original, "chat_id": chat_id})
    page = await service.messages_json(bob, chat_id, limit=50, offset=0, before=None, after=None)
    assert [m["id"] for m in page] == [newest, reply]
    assert page[1]["answer"] == original
    with pytest.raises(MessageNotFound):
        await service.message_json(bob, chat_id, original)
    with pytest.raises(MessageNotFound):
        await service.delete_message(alice, chat_id, original)
    with pytest.raises(MessageNotFound):
        await service.edit_message(alice, chat_id, original, text="back")
    # A reply to the deleted message is refused like a reply to a missing one.
    with pytest.raises(MessageNotFound):
        await service.add_message(bob, chat_id, text="late reply", answer_id=original)

    # The view the events service reads follows deletes: the newest remaining message, then none.
    await service.delete_message(alice, chat_id, newest)
    assert await raw.fetchval(view, alice, chat_id) == reply
    await service.delete_message(bob, chat_id, reply)
    assert await raw.fetchval(view, alice, chat_id) is None
    assert await raw.fetchval(view, bob, chat_id) is None


async def test_who_may_change_a_message(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob, mallory = await new_user(), await new_user(), await new_user()
    chat_id, mine = await service.start_chat(alice, recipient_id=bob, text="mine")
    other_chat, foreign = await service.start_chat(alice, recipient_id=mallory, text="elsewhere")
    assert mine is not None
    assert foreign is not None
    before = (await events(raw, chat_id), await events(raw, other_chat))
    cases: list[tuple[int, int, int, type[Exception]]] = [
        (bob, chat_id, mine, NotMessageAuthor),  # the other member
        (mallory, chat_id, mine, NotChatMember),  # a stranger
        (mallory, chat_id, MISSING, NotChatMember),  # a stranger learns nothing about messages
        (alice, chat_id, foreign, MessageNotFound),  # a message of another chat
        (alice, chat_id, MISSING, MessageNotFound),
        (alice, MISSING, mine, ChatNotFound),
    ]
    for user, chat, message, error in cases:
        with pytest.raises(error):
            await service.edit_message(user, chat, message, text="changed")
        with pytest.raises(error):
            await service.delete_message(user, chat, message)
        if error is not NotMessageAuthor:  # reading is for members, not only the author
            with pytest.raises(error):
                await service.message_json(user, chat, message)
    assert (await service.message_json(bob, chat_id, mine))["text"] == "mine"
    assert (await events(raw, chat_id), await events(raw, other_chat)) == before
    assert await raw.fetchval("SELECT text FROM private_chat.messages WHERE chat_id = $1", chat_id) == "mine"


async def test_racing_sends_with_one_nonce_store_one_message(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text=None)
    activity = await raw.fetchval("SELECT last_activity_at FROM private_chat.chats WHERE id = $1", chat_id)
    ids = await asyncio.gather(
        *(service.add_message(alice, chat_id, text=f"try {i}", answer_id=None, nonce="n-1") for i in range(8))
    )
    assert len(set(ids)) == 1
    [row] = await raw.fetch(
        "SELECT id, text, created_at FROM private_chat.messages WHERE chat_id = $1", chat_id
    )
    assert row["id"] == ids[0]
    creates = [payload for _, kind, payload in await events(raw, chat_id) if kind == "MESSAGE_CREATE"]
    assert creates == [
        {
            "id": row["id"],
            "text": row["text"],
            "answer": None,
            "chat_id": chat_id,
            "message_owner": {"id": alice, "username": f"pc{alice}", "avatar_url": None},
            "created_at": api_time(row["created_at"]),
            "edited_at": None,
            "nonce": "n-1",
        }
    ]
    # Repeats touched nothing: the chat's activity is the one message's time.
    assert (
        await raw.fetchval("SELECT last_activity_at FROM private_chat.chats WHERE id = $1", chat_id)
        == row["created_at"]
        != activity
    )
    # The nonce is the author's, in this chat: the other member, or another chat, starts afresh.
    other = await service.add_message(bob, chat_id, text="mine", answer_id=None, nonce="n-1")
    assert other != ids[0]
    elsewhere, _ = await service.start_chat(alice, recipient_id=await new_user(), text=None)
    assert await service.add_message(alice, elsewhere, text="there", answer_id=None, nonce="n-1") != ids[0]
    assert await count_messages(raw, chat_id) == 2
    # Without a nonce nothing is deduplicated, and the event has no nonce key.
    plain = [await service.add_message(alice, chat_id, text="same", answer_id=None) for _ in range(2)]
    assert plain[0] != plain[1]
    *_, (_, _, last) = await events(raw, chat_id)
    assert "nonce" not in last


async def test_a_nonce_past_its_window_sends_again(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text=None)
    first = await service.add_message(alice, chat_id, text="one", answer_id=None, nonce="again")
    assert await service.add_message(alice, chat_id, text="one", answer_id=None, nonce="again") == first
    age = "UPDATE private_chat.send_nonces SET created_at = created_at - $2::interval WHERE chat_id = $1"
    await raw.execute(age, chat_id, timedelta(minutes=9, seconds=50))
    assert await service.add_message(alice, chat_id, text="one", answer_id=None, nonce="again") == first
    await raw.execute(age, chat_id, timedelta(seconds=11))
    second = await service.add_message(alice, chat_id, text="one", answer_id=None, nonce="again")
    assert second != first
    assert await service.add_message(alice, chat_id, text="one", answer_id=None, nonce="again") == second
    assert await count_messages(raw, chat_id) == 2
    # The sweep deletes what is past the window, and only that.
    await raw.execute(age, chat_id, timedelta(minutes=20))
    third = await service.add_message(alice, chat_id, text="two", answer_id=None, nonce="fresh")
    assert await service.sweep_nonces() >= 1
    nonces = await raw.fetch(
        "SELECT nonce, message_id FROM private_chat.send_nonces WHERE chat_id = $1", chat_id
    )
    assert [(row["nonce"], row["message_id"]) for row in nonces] == [("fresh", third)]


async def test_a_repeat_of_a_deleted_message_stores_nothing(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text=None)
    first = await service.add_message(alice, chat_id, text="oops", answer_id=None, nonce="k")
    await service.delete_message(alice, chat_id, first)
    # The send happened; the retry of it must not bring the message back.
    assert await service.add_message(alice, chat_id, text="oops", answer_id=None, nonce="k") == first
    assert await count_messages(raw, chat_id) == 0


async def test_a_refused_send_claims_no_nonce(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob, carol = await new_user(), await new_user(), await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text=None)
    with pytest.raises(MessageNotFound):
        await service.add_message(alice, chat_id, text="reply", answer_id=MISSING, nonce="x")
    with pytest.raises(NotChatMember):
        await service.add_message(carol, chat_id, text="hi", answer_id=None, nonce="x")
    assert (
        await raw.fetchval("SELECT count(*) FROM private_chat.send_nonces WHERE chat_id = $1", chat_id) == 0
    )
    sent = await service.add_message(alice, chat_id, text="hi", answer_id=None, nonce="x")
    assert await count_messages(raw, chat_id) == 1
    assert (await service.message_json(bob, chat_id, sent))["text"] == "hi"


async def test_a_chats_events_follow_commit_order(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    """Sends, edits and deletes racing in one chat: each takes the chat row's lock before it takes
    its outbox id and its time, so the outbox order is the order of the changes."""
    alice, bob = await new_user(), await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text=None)
    seeds = [await service.add_message(alice, chat_id, text=f"seed {i}", answer_id=None) for i in range(12)]

    async def edit(message_id: int, round_: int) -> None:
        await service.edit_message(alice, chat_id, message_id, text=f"edit {round_}")

    async def delete(message_id: int) -> None:
        await service.delete_message(alice, chat_id, message_id)

    work = []
    for round_ in range(3):
        work += [edit(message_id, round_) for message_id in seeds[:8]]
        work += [
            service.add_message(bob, chat_id, text=f"new {round_} {i}", answer_id=None) for i in range(6)
        ]
    work += [delete(message_id) for message_id in seeds[8:]]
    await asyncio.gather(*work)

    ordered = [(kind, payload) for _, kind, payload in await events(raw, chat_id) if kind != "CHAT_CREATE"]
    times = [
        payload["edited_at"] or payload["created_at"] for kind, payload in ordered if kind != "MESSAGE_DELETE"
    ]
    assert times == sorted(times)
    created = [payload["id"] for kind, payload in ordered if kind == "MESSAGE_CREATE"]
    assert created == sorted(created)
    # A message's last event is the state it is left in.
    last: dict[int, tuple[str, dict[str, Any]]] = {}
    for kind, payload in ordered:
        last[payload["id"]] = (kind, payload)
    for message_id in seeds[:8]:
        kind, payload = last[message_id]
        shown = await service.message_json(alice, chat_id, message_id)
        assert (kind, payload["text"], payload["edited_at"]) == (
            "MESSAGE_UPDATE",
            shown["text"],
            api_time(shown["edited_at"]),
        )
    assert all(last[message_id][0] == "MESSAGE_DELETE" for message_id in seeds[8:])


async def test_routes_answer_with_the_message_object(client: httpx.AsyncClient, new_user: Any) -> None:
    alice, bob = await new_user(), await new_user()
    as_alice, as_bob = {"X-User-Id": str(alice)}, {"X-User-Id": str(bob)}
    chat_id = (
        await client.post("/private/start-chat/", json={"recipient_id": bob}, headers=as_alice)
    ).json()["chat_id"]
    sent = await client.post(
        f"/private/add-message/{chat_id}/", json={"text": "hi", "nonce": "1"}, headers=as_alice
    )
    assert sent.status_code == 200
    again = await client.post(
        f"/private/add-message/{chat_id}/", json={"text": "hi", "nonce": "1"}, headers=as_alice
    )
    assert (again.status_code, again.json()) == (200, sent.json())
    message_id = sent.json()["id"]
    path = f"/private/{chat_id}/messages/{message_id}/"
    shown = await client.get(path, headers=as_bob)
    assert shown.status_code == 200
    assert shown.json()["edited_at"] is None
    edited = await client.patch(path, json={"text": "hello"}, headers=as_alice)
    assert edited.status_code == 200
    assert edited.headers["content-type"] == "application/json"
    assert parsed(edited.json()) == {
        **parsed(shown.json()),
        "text": "hello",
        "edited_at": parsed(edited.json())["edited_at"],
    }
    assert (await client.get(path.rstrip("/"), headers=as_bob)).json()["edited_at"] is not None
    refused = await client.patch(path, json={"text": "hello", "answer": 1}, headers=as_alice)
    assert refused.status_code == 422
    assert (await client.delete(path, headers=as_bob)).status_code == 403
    deleted = await client.delete(path, headers=as_alice)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await client.delete(path, headers=as_alice)).status_code == 404
    assert (await client.get(path, headers=as_bob)).status_code == 404


async def test_a_page_names_each_owner_and_a_member_without_a_profile_as_deleted(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    """The page reads its owners from the chat's two members' profiles (repository._page_sql): each
    message carries its own author's user object, and a member whose profile is gone is `deleted`."""
    alice, bob = await new_user("http://media.test/a.png"), await new_user()
    chat_id, first = await service.start_chat(alice, recipient_id=bob, text="from alice")
    assert first is not None
    await service.add_message(bob, chat_id, text="from bob", answer_id=None)
    page = await service.messages_json(alice, chat_id, limit=50, offset=0, before=None, after=None)
    assert [(m["text"], m["message_owner"]) for m in page] == [
        ("from bob", {"id": bob, "username": f"pc{bob}", "avatar_url": None}),
        ("from alice", {"id": alice, "username": f"pc{alice}", "avatar_url": "http://media.test/a.png"}),
    ]
    await raw.execute("DELETE FROM users.users WHERE id = $1", bob)
    page = await service.messages_json(alice, chat_id, limit=50, offset=0, before=None, after=None)
    assert [m["message_owner"] for m in page] == [
        {"id": bob, "username": "deleted", "avatar_url": None},
        {"id": alice, "username": f"pc{alice}", "avatar_url": "http://media.test/a.png"},
    ]


async def test_every_read_goes_back_to_the_pool_without_a_reset(
    database_url: str, service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    """A read of the chat service is one SELECT on the pool: the connection goes back without
    asyncpg's reset query (a second round trip), and the read is asked again after a broken
    connection (common.db.is_read). The page's statement once opened with WITH and passed for a
    write: every page paid the reset."""
    alice, bob = await new_user(), await new_user()
    chat_id, first = await service.start_chat(alice, recipient_id=bob, text="one")
    assert first is not None
    second = await service.add_message(bob, chat_id, text="two", answer_id=None)
    third = await service.add_message(alice, chat_id, text="three", answer_id=None)
    probe = await make_pool(database_url, size=1, application_name="read_probe")

    async def last_statement() -> str:
        query = "SELECT query FROM pg_stat_activity WHERE application_name = 'read_probe'"
        return str(await raw.fetchval(query))

    reads = {
        "newest page": lambda: repository.member_messages_page(
            probe, chat_id, alice, limit=50, offset=0, before=None, after=None
        ),
        "older page": lambda: repository.member_messages_page(
            probe, chat_id, alice, limit=50, offset=0, before=second, after=None
        ),
        "newer page": lambda: repository.member_messages_page(
            probe, chat_id, alice, limit=50, offset=0, before=None, after=first
        ),
        "page between": lambda: repository.member_messages_page(
            probe, chat_id, alice, limit=50, offset=0, before=third, after=first
        ),
        "one message": lambda: repository.member_message(probe, chat_id, alice, first),
        "chat info": lambda: repository.chat_info(probe, chat_id),
        "chat list": lambda: repository.chat_list(probe, alice, limit=10, offset=0),
        "members": lambda: repository.get_members(probe, chat_id),
        "message access": lambda: repository.message_access(probe, chat_id, first),
        "profile": lambda: repository.profile_exists(probe, bob),
    }
    try:
        for name, read in reads.items():
            assert await read(), name
            statement = await last_statement()
            assert "RESET ALL" not in statement, name
            assert statement.lstrip().startswith("SELECT"), (name, statement[:80])
    finally:
        await close_pool(probe)
