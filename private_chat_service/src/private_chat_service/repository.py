"""Every SQL statement of the private chat service, run on asyncpg (see common.db for why).

Parameters are cast to their types in the text, so each statement prepares the same way on
every connection and its cached (generic) plan is the one the plan tests check.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from common.db import Executor

# A profile the users service no longer has still renders as a user object with this name.
MISSING_USERNAME = "deleted"

# A user object (API.md) built in SQL from a `profile` row of users.public_profiles, for event
# payloads written in the statement that makes the change.
USER_OBJECT_SQL = (
    "jsonb_build_object('id', {id}, 'username', coalesce(profile.username, 'deleted'),"
    " 'avatar_url', profile.avatar_url)"
)
# Timestamps in event payloads are written as the API writes them: ISO 8601 UTC with `Z`.
TIMESTAMP_JSON_SQL = """to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


@dataclass(frozen=True, slots=True)
class Members:
    starter_id: int
    user_low: int
    user_high: int

    def __contains__(self, user_id: object) -> bool:
        return user_id in (self.user_low, self.user_high)


class PageRow(NamedTuple):
    id: int
    text: str
    answer_id: int | None
    chat_id: int
    owner_id: int
    created_at: datetime
    username: str
    avatar_url: str | None


class ChatInfoRow(NamedTuple):
    id: int
    created_at: datetime
    last_activity_at: datetime
    starter_id: int
    recipient_id: int
    starter_username: str
    starter_avatar_url: str | None
    recipient_username: str
    recipient_avatar_url: str | None


class ChatListRow(NamedTuple):
    id: int
    last_activity_at: datetime
    companion_id: int
    username: str
    avatar_url: str | None


PROFILE_EXISTS_SQL = "SELECT 1 FROM users.public_profiles WHERE id = $1::bigint"


async def profile_exists(db: Executor, user_id: int) -> bool:
    return await db.fetchval(PROFILE_EXISTS_SQL, user_id) is not None


# Concurrent callers for one pair meet on the unique pair key: the loser's insert waits for the
# winner's transaction and then does nothing, and the follow-up read (a new snapshot under READ
# COMMITTED; a CTE would share the insert's old one) sees the winner's row. A chat that is really
# created announces itself to both members (CHAT_CREATE, one outbox row each: the companion
# differs), in the same statement.
CREATE_CHAT_SQL = f"""
    WITH created AS (
        INSERT INTO private_chat.chats (user_low, user_high, starter_id)
        VALUES ($1::bigint, $2::bigint, $3::bigint)
        ON CONFLICT (user_low, user_high) DO NOTHING
        RETURNING id, user_low, user_high
    ), announced AS (
        INSERT INTO private_chat.outbox (chat_id, kind, recipients, payload)
        SELECT created.id, 'CHAT_CREATE', ARRAY[member.user_id],
               jsonb_build_object(
                   'id', created.id, 'companion', {USER_OBJECT_SQL.format(id="member.companion_id")})
        FROM created
        CROSS JOIN LATERAL (
            VALUES (created.user_low, created.user_high), (created.user_high, created.user_low)
        ) AS member(user_id, companion_id)
        LEFT JOIN users.public_profiles AS profile ON profile.id = member.companion_id
    )
    SELECT id FROM created
"""  # noqa: S608 (only the constant fragments above are formatted in)
PAIR_CHAT_SQL = "SELECT id FROM private_chat.chats WHERE user_low = $1::bigint AND user_high = $2::bigint"


async def get_or_create_chat(db: Executor, *, starter_id: int, recipient_id: int) -> int:
    """The chat of the unordered pair, created when missing."""
    low, high = sorted((starter_id, recipient_id))
    chat_id = await db.fetchval(CREATE_CHAT_SQL, low, high, starter_id)
    if chat_id is None:
        chat_id = await db.fetchval(PAIR_CHAT_SQL, low, high)
    return int(chat_id)


MEMBERS_SQL = "SELECT starter_id, user_low, user_high FROM private_chat.chats WHERE id = $1::bigint"


async def get_members(db: Executor, chat_id: int) -> Members | None:
    row = await db.fetchrow(MEMBERS_SQL, chat_id)
    return Members(row[0], row[1], row[2]) if row is not None else None


# The send rule, in one statement (one round trip; its own transaction unless run inside one):
# touch the chat as a member, insert the message and its MESSAGE_CREATE outbox row. The UPDATE is
# the membership and reply check and takes the chat row's lock, which serialises the changes of
# one chat, so message ids and outbox ids in a chat grow in commit order; the message takes its
# created_at from the chat's new activity time. A reply target that is not a message of this chat
# makes the UPDATE match nothing: nothing at all is written.
SEND_SQL = f"""
    WITH touched AS (
        UPDATE private_chat.chats
        SET last_activity_at = greatest(last_activity_at, clock_timestamp())
        WHERE id = $1::bigint
          AND (user_low = $2::bigint OR user_high = $2::bigint)
          AND ($4::bigint IS NULL OR EXISTS (
                SELECT 1 FROM private_chat.messages
                WHERE chat_id = $1::bigint AND id = $4::bigint))
        RETURNING id, user_low, user_high, last_activity_at
    ), sent AS (
        INSERT INTO private_chat.messages (chat_id, owner_id, text, answer_id, created_at)
        SELECT id, $2::bigint, $3::text, $4::bigint, last_activity_at
        FROM touched
        RETURNING id, chat_id, owner_id, text, answer_id, created_at
    ), announced AS (
        INSERT INTO private_chat.outbox (chat_id, kind, recipients, payload)
        SELECT sent.chat_id, 'MESSAGE_CREATE', ARRAY[touched.user_low, touched.user_high],
               jsonb_build_object(
                   'id', sent.id, 'text', sent.text, 'answer', sent.answer_id, 'chat_id', sent.chat_id,
                   'message_owner', {USER_OBJECT_SQL.format(id="sent.owner_id")},
                   'created_at', {TIMESTAMP_JSON_SQL.format(column="sent.created_at")},
                   'edited_at', NULL)
        FROM sent
        CROSS JOIN touched
        LEFT JOIN users.public_profiles AS profile ON profile.id = sent.owner_id
    )
    SELECT id FROM sent
"""  # noqa: S608 (only the constant fragments above are formatted in)


async def send_as_member(
    db: Executor, *, chat_id: int, user_id: int, text: str, answer_id: int | None
) -> int | None:
    """The new message's id; None when nothing was written (no such chat, not a member, or a
    reply target outside the chat)."""
    message_id = await db.fetchval(SEND_SQL, chat_id, user_id, text, answer_id)
    return int(message_id) if message_id is not None else None


def _page_sql(*, before: bool, after: bool) -> str:
    """One page, newest first, with each owner's user object joined in and the member check riding
    along (an uncorrelated EXISTS, evaluated once): one round trip.

    The inner select is a range scan of messages_pkey (chat_id, id): backward from the newest (or
    from `before`), or forward from `after` (the next page toward the present). Parameters: $1
    chat, $2 user, $3 limit, $4 offset, then `before` and/or `after`.
    """
    conditions = ["chat_id = $1::bigint"]
    cursor = 5
    if before:
        conditions.append(f"id < ${cursor}::bigint")
        cursor += 1
    if after:
        conditions.append(f"id > ${cursor}::bigint")
    direction = "ASC" if after else "DESC"
    # Only the fixed fragments above are formatted in: no value ever is.
    return f"""
    SELECT page.id, page.text, page.answer_id, page.chat_id, page.owner_id, page.created_at,
           coalesce(profile.username, 'deleted'), profile.avatar_url
    FROM (
        SELECT id, text, answer_id, chat_id, owner_id, created_at
        FROM private_chat.messages
        WHERE {" AND ".join(conditions)}
        ORDER BY id {direction}
        LIMIT $3::bigint OFFSET $4::bigint
    ) AS page
    LEFT JOIN users.public_profiles AS profile ON profile.id = page.owner_id
    WHERE EXISTS (
        SELECT 1 FROM private_chat.chats
        WHERE id = $1::bigint AND (user_low = $2::bigint OR user_high = $2::bigint))
    ORDER BY page.id DESC
    """  # noqa: S608


# Keyed by (before given, after given): four statements, each prepared once per connection.
PAGE_SQL = {
    (before, after): _page_sql(before=before, after=after)
    for before in (False, True)
    for after in (False, True)
}


async def member_messages_page(
    db: Executor,
    chat_id: int,
    user_id: int,
    *,
    limit: int,
    offset: int,
    before: int | None,
    after: int | None,
) -> list[PageRow]:
    """Newest first; empty when the chat is missing, not the user's, or has no such page."""
    cursors = [value for value in (before, after) if value is not None]
    sql = PAGE_SQL[(before is not None, after is not None)]
    return [PageRow._make(row) for row in await db.fetch(sql, chat_id, user_id, limit, offset, *cursors)]


# The recipient is whichever member did not start the chat.
CHAT_INFO_SQL = """
    SELECT chat.id, chat.created_at, chat.last_activity_at, chat.starter_id, chat.recipient_id,
           coalesce(starter.username, 'deleted'), starter.avatar_url,
           coalesce(recipient.username, 'deleted'), recipient.avatar_url
    FROM (
        SELECT id, created_at, last_activity_at, starter_id,
               CASE WHEN starter_id = user_low THEN user_high ELSE user_low END AS recipient_id
        FROM private_chat.chats WHERE id = $1::bigint
    ) AS chat
    LEFT JOIN users.public_profiles AS starter ON starter.id = chat.starter_id
    LEFT JOIN users.public_profiles AS recipient ON recipient.id = chat.recipient_id
"""


async def chat_info(db: Executor, chat_id: int) -> ChatInfoRow | None:
    row = await db.fetchrow(CHAT_INFO_SQL, chat_id)
    return ChatInfoRow._make(row) if row is not None else None


# The user's chats, most recent activity first, each with the other member's user object. Each
# half of the union is a backward scan of one per-member index (chats_low_activity,
# chats_high_activity) cut at $2 = limit + offset (NULL: no cut); PostgreSQL merges the two
# ordered streams (Merge Append), so a page reads about `limit + offset` entries per side.
CHAT_LIST_SQL = """
    SELECT mine.id, mine.last_activity_at, mine.companion_id,
           coalesce(profile.username, 'deleted'), profile.avatar_url
    FROM (
        (SELECT id, last_activity_at, user_high AS companion_id FROM private_chat.chats
         WHERE user_low = $1::bigint ORDER BY last_activity_at DESC, id DESC LIMIT $2::bigint)
        UNION ALL
        (SELECT id, last_activity_at, user_low AS companion_id FROM private_chat.chats
         WHERE user_high = $1::bigint ORDER BY last_activity_at DESC, id DESC LIMIT $2::bigint)
    ) AS mine
    LEFT JOIN users.public_profiles AS profile ON profile.id = mine.companion_id
    ORDER BY mine.last_activity_at DESC, mine.id DESC
    LIMIT $3::bigint OFFSET $4::bigint
"""


async def chat_list(db: Executor, user_id: int, *, limit: int | None, offset: int) -> list[ChatListRow]:
    cut = limit + offset if limit is not None else None
    rows = await db.fetch(CHAT_LIST_SQL, user_id, cut, limit, offset)
    return [ChatListRow._make(row) for row in rows]


# ---- the relay (relay.py) ----------------------------------------------------------------------
# One batch at a time across every instance: a transaction-scoped advisory lock, taken without
# waiting (a relay that finds it taken tries again a moment later). The key is this constant.
RELAY_LOCK_KEY = 0x63686174_72656C61  # "chatrela"
RELAY_LOCK_SQL = "SELECT pg_try_advisory_xact_lock($1::bigint)"
# Committed rows only (READ COMMITTED), in id order, which within a chat is commit order: every
# statement that writes a chat's outbox row holds that chat's row lock until it commits.
OUTBOX_BATCH_SQL = """
    SELECT id, kind, recipients, payload::text, extract(epoch FROM now() - created_at)::float8
    FROM private_chat.outbox ORDER BY id LIMIT $1::bigint
"""
OUTBOX_DELETE_SQL = "DELETE FROM private_chat.outbox WHERE id = ANY($1::bigint[])"


class OutboxRow(NamedTuple):
    id: int
    kind: str
    recipients: list[int]
    payload: str
    age_seconds: float


async def lock_relay(db: Executor) -> bool:
    return bool(await db.fetchval(RELAY_LOCK_SQL, RELAY_LOCK_KEY))


async def outbox_batch(db: Executor, limit: int) -> list[OutboxRow]:
    rows = await db.fetch(OUTBOX_BATCH_SQL, limit)
    return [OutboxRow(row[0], row[1], list(row[2]), row[3], row[4]) for row in rows]


async def delete_outbox(db: Executor, ids: list[int]) -> None:
    await db.execute(OUTBOX_DELETE_SQL, ids)
