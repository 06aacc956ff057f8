"""Private chat rules. Raises AppError; knows nothing of HTTP routing."""

from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.errors import AppError
from private_chat_service import repository
from private_chat_service.schemas import ChatInfo, ChatListItem, UserObject


class PrivateChatService:
    def __init__(self, engine: AsyncEngine, pool: asyncpg.Pool) -> None:
        self.engine = engine
        # Plain asyncpg connections to the same database, for the hottest single statement.
        self.pool = pool
        # The same pool, for single statements that need no BEGIN/COMMIT round trips around them.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def start_chat(
        self, user_id: int, *, recipient_id: int, text: str | None
    ) -> tuple[int, int | None]:
        """The pair's chat id (created when missing) and the id of the message `text` added.

        The chat and its first message are written in one transaction.
        """
        if recipient_id == user_id:
            raise AppError(400, "chat_with_self")
        async with self.engine.begin() as conn:
            if not await repository.profile_exists(conn, recipient_id):
                raise AppError(404, "user_not_found")
            chat_id = await repository.get_or_create_chat(conn, starter_id=user_id, recipient_id=recipient_id)
            message_id = None
            if text is not None:
                sent_at = await repository.touch_chat_as_member(conn, chat_id, user_id)
                assert sent_at is not None  # the caller is a member of the pair's chat
                message_id = await repository.insert_message(
                    conn, chat_id=chat_id, owner_id=user_id, text=text, answer_id=None, created_at=sent_at
                )
        return chat_id, message_id

    async def add_message(self, user_id: int, chat_id: int, *, text: str, answer_id: int | None) -> int:
        """One statement, its own transaction: lock-and-touch the chat as a member, check the reply,
        insert (the hot path: one round trip). When it wrote nothing, a second look says why."""
        message_id = await repository.add_message_as_member(
            self.pool, chat_id=chat_id, user_id=user_id, text=text, answer_id=answer_id
        )
        if message_id is not None:
            return message_id
        async with self.autocommit.connect() as conn:
            members = await repository.get_members(conn, chat_id)
        if members is None:
            raise AppError(404, "chat_not_found")
        if user_id not in members:
            raise AppError(403, "not_chat_member")
        # A missing message and a message of another chat look the same: nothing leaks.
        raise AppError(404, "message_not_found")

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
        async with self.autocommit.connect() as conn:
            rows = await repository.member_messages_page(
                conn, chat_id, user_id, limit=limit, offset=offset, before=before, after=after
            )
            if not rows:
                await self._require_member(conn, chat_id, user_id)
        return [
            {
                "id": message_id,
                "text": text,
                "answer": answer_id,
                "chat_id": row_chat_id,
                "message_owner": {"id": owner_id, "username": username, "avatar_url": avatar_url},
                "created_at": created_at,
            }
            for message_id, text, answer_id, row_chat_id, owner_id, created_at, username, avatar_url in rows
        ]

    async def chat_info(self, user_id: int, chat_id: int) -> ChatInfo:
        async with self.engine.connect() as conn:
            row = await repository.chat_info(conn, chat_id)
        if row is None:
            raise AppError(404, "chat_not_found")
        if user_id not in (row["starter_id"], row["recipient_id"]):
            raise AppError(403, "not_chat_member")
        return ChatInfo(
            id=row["id"],
            chat_starter=_user(row["starter_id"], row["starter_username"], row["starter_avatar_url"]),
            chat_recipient=_user(row["recipient_id"], row["recipient_username"], row["recipient_avatar_url"]),
            created_at=row["created_at"],
            last_activity_at=row["last_activity_at"],
        )

    async def chat_list(self, user_id: int, *, limit: int | None, offset: int) -> list[ChatListItem]:
        async with self.engine.connect() as conn:
            rows = await repository.chat_list(conn, user_id, limit=limit, offset=offset)
        return [
            ChatListItem(
                id=row["id"],
                companion=_user(row["companion_id"], row["username"], row["avatar_url"]),
                last_activity_at=row["last_activity_at"],
            )
            for row in rows
        ]

    async def _require_member(self, conn: AsyncConnection, chat_id: int, user_id: int) -> None:
        members = await repository.get_members(conn, chat_id)
        if members is None:
            raise AppError(404, "chat_not_found")
        if user_id not in members:
            raise AppError(403, "not_chat_member")


def _user(user_id: Any, username: Any, avatar_url: Any) -> UserObject:
    return UserObject(id=user_id, username=username, avatar_url=avatar_url)
