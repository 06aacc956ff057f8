"""Every SQL statement of the private chat service."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    Select,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from private_chat_service.models import chats, messages, public_profiles

# A profile the users service no longer has still renders as a user object.
MISSING_USERNAME = "deleted"


@dataclass(frozen=True, slots=True)
class Members:
    starter_id: int
    user_low: int
    user_high: int

    def __contains__(self, user_id: object) -> bool:
        return user_id in (self.user_low, self.user_high)


async def profile_exists(conn: AsyncConnection, user_id: int) -> bool:
    statement = select(literal(1)).select_from(public_profiles).where(public_profiles.c.id == user_id)
    return (await conn.execute(statement)).first() is not None


async def get_or_create_chat(conn: AsyncConnection, *, starter_id: int, recipient_id: int) -> int:
    """The chat of the unordered pair, created when missing.

    Concurrent callers for one pair meet on the unique pair key: the loser's insert waits for
    the winner's transaction and then does nothing, and the follow-up read (a new snapshot under
    READ COMMITTED) sees the winner's row.
    """
    low, high = sorted((starter_id, recipient_id))
    created = await conn.execute(
        insert(chats)
        .values(user_low=low, user_high=high, starter_id=starter_id)
        .on_conflict_do_nothing(index_elements=[chats.c.user_low, chats.c.user_high])
        .returning(chats.c.id)
    )
    chat_id = created.scalar_one_or_none()
    if chat_id is None:
        existing = await conn.execute(
            select(chats.c.id).where(chats.c.user_low == low, chats.c.user_high == high)
        )
        chat_id = existing.scalar_one()
    return int(chat_id)


async def get_members(conn: AsyncConnection, chat_id: int) -> Members | None:
    statement = select(chats.c.starter_id, chats.c.user_low, chats.c.user_high).where(chats.c.id == chat_id)
    row = (await conn.execute(statement)).first()
    return Members(int(row.starter_id), int(row.user_low), int(row.user_high)) if row else None


async def touch_chat_as_member(conn: AsyncConnection, chat_id: int, user_id: int) -> datetime | None:
    """Record activity on a chat the user belongs to, and hold its row lock until commit.

    The lock serialises the sends of one chat, so message ids in a chat grow in commit order:
    a client that polls with `after=<last id seen>` never skips a message committed later.
    Returns the new activity time (never earlier than the previous one), which the message
    takes as its `created_at`; None when the chat is missing or the user is not a member
    (nothing was changed).
    """
    statement = (
        update(chats)
        .where(chats.c.id == chat_id, or_(chats.c.user_low == user_id, chats.c.user_high == user_id))
        .values(last_activity_at=func.greatest(chats.c.last_activity_at, func.clock_timestamp()))
        .returning(chats.c.last_activity_at)
    )
    activity: datetime | None = (await conn.execute(statement)).scalar_one_or_none()
    return activity


async def message_in_chat(conn: AsyncConnection, chat_id: int, message_id: int) -> bool:
    statement = (
        select(literal(1))
        .select_from(messages)
        .where(messages.c.chat_id == chat_id, messages.c.id == message_id)
    )
    return (await conn.execute(statement)).first() is not None


async def insert_message(
    conn: AsyncConnection,
    *,
    chat_id: int,
    owner_id: int,
    text: str,
    answer_id: int | None,
    created_at: datetime,
) -> int:
    statement = (
        insert(messages)
        .values(
            chat_id=chat_id,
            owner_id=owner_id,
            text=text,
            answer_id=answer_id,
            created_at=created_at,
        )
        .returning(messages.c.id)
    )
    return int((await conn.execute(statement)).scalar_one())


# The send path in one statement (one round trip, its own transaction): touch the chat as a member
# (the row lock serialises the chat's sends, as in touch_chat_as_member) and insert. A reply target
# that is not a message of this chat makes the UPDATE match nothing, so nothing at all is written.
# asyncpg's $n parameters: the hot path runs it on asyncpg directly.
ADD_MESSAGE_AS_MEMBER_SQL = """
    WITH touched AS (
        UPDATE private_chat.chats
        SET last_activity_at = greatest(last_activity_at, clock_timestamp())
        WHERE id = CAST($1 AS bigint)
          AND (user_low = CAST($2 AS bigint) OR user_high = CAST($2 AS bigint))
          AND (CAST($4 AS bigint) IS NULL OR EXISTS (
                SELECT 1 FROM private_chat.messages
                WHERE chat_id = CAST($1 AS bigint) AND id = CAST($4 AS bigint)))
        RETURNING id, last_activity_at
    )
    INSERT INTO private_chat.messages (chat_id, owner_id, text, answer_id, created_at)
    SELECT id, CAST($2 AS bigint), CAST($3 AS text), CAST($4 AS bigint), last_activity_at
    FROM touched
    RETURNING id
"""


async def add_message_as_member(
    pool: asyncpg.Pool, *, chat_id: int, user_id: int, text: str, answer_id: int | None
) -> int | None:
    """The new message's id; None when nothing was written (no such chat, not a member, or a
    reply target outside the chat). Plain asyncpg: SQLAlchemy was about a third of the service's
    CPU per send in profiles."""
    message_id = await pool.fetchval(ADD_MESSAGE_AS_MEMBER_SQL, chat_id, user_id, text, answer_id)
    return int(message_id) if message_id is not None else None


# Values or bind parameters (the service's statements are built once with bind parameters).
IntArg = int | BindParameter[int]


def messages_page_query(
    chat_id: IntArg, *, limit: IntArg, offset: IntArg, before: IntArg | None, after: IntArg | None
) -> Select[Any]:
    """One page, newest first, with each owner's user object joined in (one query).

    The inner select is a range scan of messages_pkey (chat_id, id): backward from the newest
    (or from `before`), or forward from `after` (the next page toward the present).
    """
    page = select(
        messages.c.id,
        messages.c.text,
        messages.c.answer_id,
        messages.c.chat_id,
        messages.c.owner_id,
        messages.c.created_at,
    ).where(messages.c.chat_id == chat_id)
    if before is not None:
        page = page.where(messages.c.id < before)
    if after is not None:
        page = page.where(messages.c.id > after).order_by(messages.c.id.asc())
    else:
        page = page.order_by(messages.c.id.desc())
    inner = page.limit(limit).offset(offset).subquery("page")
    return (
        select(
            inner.c.id,
            inner.c.text,
            inner.c.answer_id,
            inner.c.chat_id,
            inner.c.owner_id,
            inner.c.created_at,
            func.coalesce(public_profiles.c.username, MISSING_USERNAME).label("username"),
            public_profiles.c.avatar_url,
        )
        .select_from(inner.outerjoin(public_profiles, public_profiles.c.id == inner.c.owner_id))
        .order_by(inner.c.id.desc())
    )


def _member_page_statement(cursor: str | None) -> Select[Any]:
    """messages_page_query with bind parameters (built once per cursor kind, not per request),
    answering rows only when :user_id is a member of the chat: the member check rides along in the
    same round trip (an uncorrelated EXISTS, evaluated once)."""
    chat_id = bindparam("chat_id", type_=BigInteger)
    user_id = bindparam("user_id", type_=BigInteger)
    member = exists().where(
        chats.c.id == chat_id, or_(chats.c.user_low == user_id, chats.c.user_high == user_id)
    )
    return messages_page_query(
        chat_id,
        limit=bindparam("limit", type_=BigInteger),
        offset=bindparam("offset", type_=BigInteger),
        before=bindparam("before", type_=BigInteger) if cursor in ("before", "between") else None,
        after=bindparam("after", type_=BigInteger) if cursor in ("after", "between") else None,
    ).where(member)


_MEMBER_PAGE = {cursor: _member_page_statement(cursor) for cursor in (None, "before", "after", "between")}


async def member_messages_page(
    conn: AsyncConnection,
    chat_id: int,
    user_id: int,
    *,
    limit: int,
    offset: int,
    before: int | None,
    after: int | None,
) -> list[tuple[Any, ...]]:
    """Rows (id, text, answer_id, chat_id, owner_id, created_at, username, avatar_url), newest
    first; empty when the chat is missing, not the user's, or has no such page."""
    params: dict[str, Any] = {"chat_id": chat_id, "user_id": user_id, "limit": limit, "offset": offset}
    if before is not None:
        params["before"] = before
    if after is not None:
        params["after"] = after
    cursor = {(False, False): None, (True, False): "before", (False, True): "after"}.get(
        (before is not None, after is not None), "between"
    )
    return [tuple(row) for row in await conn.execute(_MEMBER_PAGE[cursor], params)]


async def chat_info(conn: AsyncConnection, chat_id: int) -> dict[str, Any] | None:
    starter = public_profiles.alias("starter")
    recipient = public_profiles.alias("recipient")
    # The recipient is whichever member did not start the chat.
    recipient_id = case((chats.c.starter_id == chats.c.user_low, chats.c.user_high), else_=chats.c.user_low)
    statement = (
        select(
            chats.c.id,
            chats.c.created_at,
            chats.c.last_activity_at,
            chats.c.starter_id,
            recipient_id.label("recipient_id"),
            func.coalesce(starter.c.username, MISSING_USERNAME).label("starter_username"),
            starter.c.avatar_url.label("starter_avatar_url"),
            func.coalesce(recipient.c.username, MISSING_USERNAME).label("recipient_username"),
            recipient.c.avatar_url.label("recipient_avatar_url"),
        )
        .select_from(
            chats.outerjoin(starter, starter.c.id == chats.c.starter_id).outerjoin(
                recipient, recipient.c.id == recipient_id
            )
        )
        .where(chats.c.id == chat_id)
    )
    row = (await conn.execute(statement)).mappings().first()
    return dict(row) if row else None


def chat_list_query(user_id: int, *, limit: int | None, offset: int) -> Select[Any]:
    """The user's chats, most recent activity first, each with the other member's user object.

    Each half of the union is a backward scan of one per-member index (chats_low_activity,
    chats_high_activity), cut at `limit + offset`; PostgreSQL merges the two ordered streams
    (Merge Append), so a page reads about `limit + offset` index entries per side.
    """
    halves = []
    for mine, other in ((chats.c.user_low, chats.c.user_high), (chats.c.user_high, chats.c.user_low)):
        half = select(chats.c.id, chats.c.last_activity_at, other.label("companion_id")).where(
            mine == user_id
        )
        if limit is not None:
            half = half.order_by(chats.c.last_activity_at.desc(), chats.c.id.desc()).limit(limit + offset)
        halves.append(half)
    both = union_all(*halves).subquery("mine")
    statement = (
        select(
            both.c.id,
            both.c.last_activity_at,
            both.c.companion_id,
            func.coalesce(public_profiles.c.username, MISSING_USERNAME).label("username"),
            public_profiles.c.avatar_url,
        )
        .select_from(both.outerjoin(public_profiles, public_profiles.c.id == both.c.companion_id))
        .order_by(both.c.last_activity_at.desc(), both.c.id.desc())
        .offset(offset)
    )
    if limit is not None:
        statement = statement.limit(limit)
    return statement


async def chat_list(
    conn: AsyncConnection, user_id: int, *, limit: int | None, offset: int
) -> list[dict[str, Any]]:
    statement = chat_list_query(user_id, limit=limit, offset=offset)
    return [dict(row) for row in (await conn.execute(statement)).mappings()]
