"""Private chat rules. Raises the service's typed errors; knows nothing of HTTP routing."""

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.exceptions import RedisError

from common.db import Executor, idempotent_writes
from common.errors import UserNotFound
from common.events import Event, EventPublisher
from private_chat_service import repository
from private_chat_service.errors import (
    ChatNotFound,
    ChatWithSelf,
    MessageNotFound,
    NotChatMember,
    NotMessageAuthor,
)

logger = logging.getLogger("private_chat_service.service")


def _nothing() -> None:
    pass


class PrivateChatService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        events: EventPublisher | None = None,
        outbox_written: Callable[[], None] = _nothing,
    ) -> None:
        self.pool = pool
        self.events = events
        # Called after every commit that wrote outbox rows (wakes the relay).
        self.outbox_written = outbox_written

    async def start_chat(
        self, user_id: int, *, recipient_id: int, text: str | None
    ) -> tuple[int, int | None]:
        """The pair's chat id (created when missing) and the id of the message `text` added.

        The chat and its first message are written in one transaction, the message by the same
        send statement as add-message.
        """
        if recipient_id == user_id:
            raise ChatWithSelf()
        async with self.pool.acquire() as conn, conn.transaction():
            if not await repository.profile_exists(conn, recipient_id):
                raise UserNotFound()
            chat_id = await repository.get_or_create_chat(conn, starter_id=user_id, recipient_id=recipient_id)
            message_id = None
            if text is not None:
                message_id = await repository.send_as_member(
                    conn, chat_id=chat_id, user_id=user_id, text=text, answer_id=None
                )
                assert message_id is not None  # the caller is a member of the pair's chat
        self.outbox_written()
        return chat_id, message_id

    async def add_message(
        self, user_id: int, chat_id: int, *, text: str, answer_id: int | None, nonce: str | None = None
    ) -> int:
        """One statement, its own transaction (the hot path: one round trip). When it wrote
        nothing, a second look says why: a repeated nonce (the first message's id is the answer),
        or a refusal."""
        # With a nonce the send is idempotent (a repeat gives back the first message), so the
        # pool may run it again when the connection broke mid-statement (a database restart)
        # instead of answering 503.
        with idempotent_writes() if nonce is not None else contextlib.nullcontext():
            message_id = await repository.send_as_member(
                self.pool, chat_id=chat_id, user_id=user_id, text=text, answer_id=answer_id, nonce=nonce
            )
        if message_id is not None:
            self.outbox_written()
            return message_id
        if nonce is not None:
            first = await repository.first_of_nonce(self.pool, chat_id=chat_id, user_id=user_id, nonce=nonce)
            if first is not None:
                return first
        await self._require_member(self.pool, chat_id, user_id)
        # A missing message and a message of another chat look the same: nothing leaks.
        raise MessageNotFound()

    async def message_json(self, user_id: int, chat_id: int, message_id: int) -> dict[str, Any]:
        row = await repository.member_message(self.pool, chat_id, user_id, message_id)
        if row is None:
            await self._require_member(self.pool, chat_id, user_id)
            raise MessageNotFound()
        return _message_dict(row)

    async def edit_message(self, user_id: int, chat_id: int, message_id: int, *, text: str) -> str:
        """The edited message object as JSON text (the same object its MESSAGE_UPDATE carries)."""
        edited = await repository.edit_as_author(
            self.pool, chat_id=chat_id, user_id=user_id, message_id=message_id, text=text
        )
        if edited is None:
            await self._refusal(chat_id, user_id, message_id)
        assert edited is not None
        self.outbox_written()
        return edited

    async def delete_message(self, user_id: int, chat_id: int, message_id: int) -> None:
        if not await repository.delete_as_author(
            self.pool, chat_id=chat_id, user_id=user_id, message_id=message_id
        ):
            await self._refusal(chat_id, user_id, message_id)
        self.outbox_written()

    async def sweep_nonces(self) -> int:
        return await repository.sweep_nonces(self.pool)

    async def _refusal(self, chat_id: int, user_id: int, message_id: int) -> None:
        """Raises why an edit or delete changed nothing; membership is answered first, so a
        stranger learns nothing about the chat's messages."""
        access = await repository.message_access(self.pool, chat_id, message_id)
        if access is None:
            raise ChatNotFound()
        if user_id not in (access.user_low, access.user_high):
            raise NotChatMember()
        if access.owner_id is None:
            raise MessageNotFound()
        if access.owner_id != user_id:
            raise NotMessageAuthor()
        # The author's message is there now but was not when the change ran (an id asked for
        # before its send committed): there was nothing to change.
        raise MessageNotFound()

    async def messages_json(
        self,
        user_id: int,
        chat_id: int,
        *,
        limit: int,
        offset: int,
        before: int | None,
        after: int | None,
    ) -> list[dict[str, Any]]:
        """`messages`, as plain API-shaped dicts (the hot read path: one round trip, no models)."""
        rows = await repository.member_messages_page(
            self.pool, chat_id, user_id, limit=limit, offset=offset, before=before, after=after
        )
        if not rows:
            await self._require_member(self.pool, chat_id, user_id)
        return [_message_dict(row) for row in rows]

    async def chat_info(self, user_id: int, chat_id: int) -> dict[str, Any]:
        """The chat object (API.md 11) as plain data for orjson, like the message pages."""
        row = await repository.chat_info(self.pool, chat_id)
        if row is None:
            raise ChatNotFound()
        if user_id not in (row.starter_id, row.recipient_id):
            raise NotChatMember()
        return {
            "id": row.id,
            "chat_starter": _user_dict(row.starter_id, row.starter_username, row.starter_avatar_url),
            "chat_recipient": _user_dict(row.recipient_id, row.recipient_username, row.recipient_avatar_url),
            "created_at": row.created_at,
            "last_activity_at": row.last_activity_at,
        }

    async def chat_list(self, user_id: int, *, limit: int | None, offset: int) -> list[dict[str, Any]]:
        """The chat list (API.md 10) as plain data for orjson."""
        rows = await repository.chat_list(self.pool, user_id, limit=limit, offset=offset)
        return [
            {
                "id": row.id,
                "companion": _user_dict(row.companion_id, row.username, row.avatar_url),
                "last_activity_at": row.last_activity_at,
            }
            for row in rows
        ]

    async def typing(self, user_id: int, chat_id: int) -> None:
        """TYPING_START to the other member (API.md 19): ephemeral, straight to Redis with no
        outbox row. Best effort: with Redis unreachable the indicator is dropped (a client has
        nothing to do about a lost typing indicator), the answer is the same."""
        members = await repository.get_members(self.pool, chat_id)
        if members is None:
            raise ChatNotFound()
        if user_id not in members:
            raise NotChatMember()
        if self.events is None:
            return
        other = members.user_high if user_id == members.user_low else members.user_low
        timestamp = datetime.now(UTC)
        payload = {"chat_id": chat_id, "user_id": user_id, "timestamp": timestamp}
        event = Event("", "TYPING_START", [other], orjson.dumps(payload, option=orjson.OPT_UTC_Z).decode())
        try:
            await self.events.publish_ephemeral(event)
        except (RedisError, OSError) as exc:
            logger.warning("typing event dropped", extra={"error": repr(exc)})

    @staticmethod
    async def _require_member(db: Executor, chat_id: int, user_id: int) -> None:
        members = await repository.get_members(db, chat_id)
        if members is None:
            raise ChatNotFound()
        if user_id not in members:
            raise NotChatMember()


def _user_dict(user_id: int, username: str, avatar_url: str | None) -> dict[str, Any]:
    """The user object (API.md conventions) as plain data."""
    return {"id": user_id, "username": username, "avatar_url": avatar_url}


def _message_dict(row: repository.PageRow) -> dict[str, Any]:
    """The message object (API.md 9, 15) as plain data, for orjson."""
    return {
        "id": row.id,
        "text": row.text,
        "answer": row.answer_id,
        "chat_id": row.chat_id,
        "message_owner": _user_dict(row.owner_id, row.username, row.avatar_url),
        "created_at": row.created_at,
        "edited_at": row.edited_at,
    }
