"""The service against a real PostgreSQL: races, ordering, and what a page is built from."""

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest

from common.errors import UserNotFound
from private_chat_service.errors import MessageNotFound, NotChatMember
from private_chat_service.service import PrivateChatService


async def test_racing_start_chat_gives_one_chat(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    results = await asyncio.gather(
        *(
            service.start_chat(alice if i % 2 else bob, recipient_id=bob if i % 2 else alice, text=f"t{i}")
            for i in range(40)
        )
    )
    assert len({chat_id for chat_id, _ in results}) == 1
    chat_id = results[0][0]
    assert (
        await raw.fetchval(
            "SELECT count(*) FROM private_chat.chats WHERE user_low = $1 AND user_high = $2",
            min(alice, bob),
            max(alice, bob),
        )
        == 1
    )
    assert await raw.fetchval("SELECT count(*) FROM private_chat.messages WHERE chat_id = $1", chat_id) == 40


async def test_message_ids_follow_commit_order(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text=None)
    await asyncio.gather(
        *(
            service.add_message(alice if i % 2 else bob, chat_id, text=f"m{i}", answer_id=None)
            for i in range(60)
        )
    )
    rows = await raw.fetch(
        "SELECT id, created_at FROM private_chat.messages WHERE chat_id = $1 ORDER BY id", chat_id
    )
    assert len(rows) == 60
    # Sends of one chat are serialised by the chat row's lock: the time taken after the lock
    # grows with the id, so `after=<id>` polling cannot skip a later commit.
    times = [row["created_at"] for row in rows]
    assert times == sorted(times)
    activity = await raw.fetchval("SELECT last_activity_at FROM private_chat.chats WHERE id = $1", chat_id)
    assert activity == times[-1]


async def test_failed_send_changes_nothing(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob, carol = await new_user(), await new_user(), await new_user()
    chat_id, first = await service.start_chat(alice, recipient_id=bob, text="first")
    _, foreign = await service.start_chat(alice, recipient_id=carol, text="elsewhere")
    assert first is not None
    assert foreign is not None
    activity = await raw.fetchval("SELECT last_activity_at FROM private_chat.chats WHERE id = $1", chat_id)
    with pytest.raises(MessageNotFound):
        await service.add_message(bob, chat_id, text="reply", answer_id=foreign)
    with pytest.raises(NotChatMember):
        await service.add_message(carol, chat_id, text="hi", answer_id=None)
    # The membership touch was rolled back with the refused insert.
    assert (
        await raw.fetchval("SELECT last_activity_at FROM private_chat.chats WHERE id = $1", chat_id)
        == activity
    )
    assert await raw.fetchval("SELECT count(*) FROM private_chat.messages WHERE chat_id = $1", chat_id) == 1


async def test_database_refuses_a_second_chat_for_a_pair(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    # (A reply into another chat is refused by the send statement: test_failed_send_changes_nothing.
    # The database keeps no reply key, since a reply outlives the message it answers.)
    alice, bob = await new_user(), await new_user()
    await service.start_chat(alice, recipient_id=bob, text="here")
    with pytest.raises(asyncpg.UniqueViolationError):
        await raw.execute(
            "INSERT INTO private_chat.chats (user_low, user_high, starter_id) VALUES ($1, $2, $2)",
            min(alice, bob),
            max(alice, bob),
        )


async def test_page_renders_user_objects_and_deleted_profiles(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice = await new_user(avatar_url="http://media.example/a.png")
    bob = await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text="from alice")
    await service.add_message(bob, chat_id, text="from bob", answer_id=None)
    await raw.execute("DELETE FROM users.users WHERE id = $1", bob)
    [newest, oldest] = await service.messages_json(
        alice, chat_id, limit=50, offset=0, before=None, after=None
    )
    assert newest["message_owner"] == {"id": bob, "username": "deleted", "avatar_url": None}
    assert oldest["message_owner"] == {
        "id": alice,
        "username": f"pc{alice}",
        "avatar_url": "http://media.example/a.png",
    }
    info = await service.chat_info(alice, chat_id)
    assert info["chat_starter"]["id"] == alice
    assert info["chat_recipient"]["username"] == "deleted"
    # A deleted recipient cannot get a new chat.
    with pytest.raises(UserNotFound):
        await service.start_chat(alice, recipient_id=bob, text=None)


async def test_lone_surrogate_is_a_422_not_a_500(client: httpx.AsyncClient, new_user: Any) -> None:
    alice, bob = await new_user(), await new_user()
    started = await client.post(
        "/private/start-chat/", json={"recipient_id": bob}, headers={"X-User-Id": str(alice)}
    )
    assert started.status_code == 200
    response = await client.post(
        f"/private/add-message/{started.json()['chat_id']}/",
        content=b'{"text": "bad \\udc00 text"}',
        headers={"X-User-Id": str(alice), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    # Refused for the whole body by the shared middleware, before field validation.
    assert response.json()["detail"][0]["loc"] == ["body"]


async def test_without_identity_every_route_is_401(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("POST", "/private/start-chat/"),
        ("GET", "/private/1/messages"),
        ("GET", "/private/1/info/"),
        ("POST", "/private/add-message/1/"),
        ("GET", "/private/chat-list/"),
    ):
        response = await client.request(method, path, json={"recipient_id": 1, "text": "x"})
        assert response.status_code == 401, (method, path, response.text)


async def outbox(raw: asyncpg.Connection, chat_id: int) -> list[tuple[str, list[int], dict[str, Any]]]:
    rows = await raw.fetch(
        "SELECT kind, recipients, payload FROM private_chat.outbox WHERE chat_id = $1 ORDER BY id", chat_id
    )
    return [(row["kind"], sorted(row["recipients"]), json.loads(row["payload"])) for row in rows]


async def test_changes_write_their_events_in_the_same_statement(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice = await new_user(avatar_url="http://media.example/a.png")
    bob = await new_user()
    chat_id, first = await service.start_chat(alice, recipient_id=bob, text="hello")
    again, _ = await service.start_chat(bob, recipient_id=alice, text=None)
    assert again == chat_id
    reply = await service.add_message(bob, chat_id, text="hi", answer_id=first)
    events = await outbox(raw, chat_id)
    # The chat is announced once, to each member with the other as companion; then each message.
    assert [(kind, recipients) for kind, recipients, _ in events[2:]] == [
        ("MESSAGE_CREATE", sorted([alice, bob])),
        ("MESSAGE_CREATE", sorted([alice, bob])),
    ]
    announced = {recipients[0]: payload for kind, recipients, payload in events[:2] if kind == "CHAT_CREATE"}
    assert announced == {
        alice: {"id": chat_id, "companion": {"id": bob, "username": f"pc{bob}", "avatar_url": None}},
        bob: {
            "id": chat_id,
            "companion": {"id": alice, "username": f"pc{alice}", "avatar_url": "http://media.example/a.png"},
        },
    }
    [page_reply, page_first] = await service.messages_json(
        alice, chat_id, limit=50, offset=0, before=None, after=None
    )
    for payload, shown in ((events[2][2], page_first), (events[3][2], page_reply)):
        # The event carries the message object exactly as a page shows it (and edited_at).
        created = shown["created_at"].isoformat().replace("+00:00", "Z")
        assert payload == {**shown, "created_at": created, "edited_at": None}
    assert events[3][2]["id"] == reply
    assert events[3][2]["answer"] == first


async def test_a_refused_change_writes_no_event(
    service: PrivateChatService, raw: asyncpg.Connection, new_user: Any
) -> None:
    alice, bob, carol = await new_user(), await new_user(), await new_user()
    chat_id, _ = await service.start_chat(alice, recipient_id=bob, text=None)
    before = await outbox(raw, chat_id)
    with pytest.raises(NotChatMember):
        await service.add_message(carol, chat_id, text="hi", answer_id=None)
    with pytest.raises(MessageNotFound):
        await service.add_message(alice, chat_id, text="hi", answer_id=10**15)
    assert await outbox(raw, chat_id) == before
