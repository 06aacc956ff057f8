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


def message_object_sql(row: str) -> str:
    """The message object (API.md 9, 15) built in SQL from `row` (a messages row, or a RETURNING
    of one) and its owner's `profile` row, for event payloads and answers made by the statement
    that makes the change."""
    return (
        f"jsonb_build_object('id', {row}.id, 'text', {row}.text, 'answer', {row}.answer_id,"
        f" 'chat_id', {row}.chat_id, 'message_owner', {USER_OBJECT_SQL.format(id=f'{row}.owner_id')},"
        f" 'created_at', {TIMESTAMP_JSON_SQL.format(column=f'{row}.created_at')},"
        f" 'edited_at', {TIMESTAMP_JSON_SQL.format(column=f'{row}.edited_at')})"
    )


# The `profile` row of one message's owner, for a statement about one message: a lateral look-up
# by key (LIMIT 1 keeps the planner from turning it into a join it may merge against a whole
# index of users; one row, one probe of users_pkey).
def profile_of_sql(user_id: str) -> str:
    # `user_id` is a column reference written in this module, never a value.
    sql = "LEFT JOIN LATERAL (SELECT username, avatar_url FROM users.public_profiles WHERE id = {} LIMIT 1)"
    return sql.format(user_id) + " AS profile ON true"


# How long a nonce makes a repeated send give back the first message (API.md 18).
NONCE_WINDOW_SQL = "interval '10 minutes'"


@dataclass(frozen=True, slots=True)
class Members:
    starter_id: int
    user_low: int
    user_high: int

    def __contains__(self, user_id: object) -> bool:
        return user_id in (self.user_low, self.user_high)


class PageRow(NamedTuple):
    """A message with its owner's profile: a page entry, or one message."""

    id: int
    text: str
    answer_id: int | None
    chat_id: int
    owner_id: int
    created_at: datetime
    edited_at: datetime | None
    username: str
    avatar_url: str | None


class MessageAccessRow(NamedTuple):
    """Why a change to a message was refused: the chat's members, and the message's owner (None
    when the chat has no such message)."""

    user_low: int
    user_high: int
    owner_id: int | None


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


# The send rule, in one statement (one round trip; its own transaction unless run inside one).
# `locked` is the membership and reply check and takes the chat row's lock first: it serialises
# the changes of one chat (sends, edits, deletes), so message ids and outbox ids in a chat grow in
# commit order. The id and the time are taken under the lock (`fresh`); the time is also the
# chat's new activity time. With a nonce, `claimed` inserts its row keyed by (chat, author,
# nonce): a repeat within the window conflicts with the first send's row (committed: the first
# send held the lock until then) and the message is not inserted, nor the chat touched, nor an
# event written; the statement then returns nothing and `first_of_nonce` reads the first id.
# A row past the window is taken over in place. A reply target that is not a message of this
# chat makes `locked` empty: nothing at all is written.
SEND_SQL = f"""
    WITH locked AS (
        SELECT id, user_low, user_high, last_activity_at
        FROM private_chat.chats
        WHERE id = $1::bigint
          AND (user_low = $2::bigint OR user_high = $2::bigint)
          AND ($4::bigint IS NULL OR EXISTS (
                SELECT 1 FROM private_chat.messages
                WHERE chat_id = $1::bigint AND id = $4::bigint))
        FOR NO KEY UPDATE
    ), fresh AS (
        SELECT nextval('private_chat.messages_id_seq'::regclass) AS id, id AS chat_id, user_low,
               user_high, greatest(last_activity_at, clock_timestamp()) AS created_at
        FROM locked
    ), claimed AS (
        INSERT INTO private_chat.send_nonces AS kept (chat_id, owner_id, nonce, message_id, created_at)
        SELECT chat_id, $2::bigint, $5::text, id, created_at FROM fresh WHERE $5::text IS NOT NULL
        ON CONFLICT (chat_id, owner_id, nonce) DO UPDATE
            SET message_id = excluded.message_id, created_at = excluded.created_at
            WHERE kept.created_at <= excluded.created_at - {NONCE_WINDOW_SQL}
        RETURNING message_id
    ), sent AS (
        INSERT INTO private_chat.messages (id, chat_id, owner_id, text, answer_id, created_at)
        SELECT id, chat_id, $2::bigint, $3::text, $4::bigint, created_at
        FROM fresh
        WHERE $5::text IS NULL OR EXISTS (SELECT 1 FROM claimed)
        RETURNING id, chat_id, owner_id, text, answer_id, created_at, NULL::timestamptz AS edited_at
    ), touched AS (
        UPDATE private_chat.chats SET last_activity_at = sent.created_at
        FROM sent
        WHERE chats.id = $1::bigint
    ), announced AS (
        INSERT INTO private_chat.outbox (chat_id, kind, recipients, payload)
        SELECT sent.chat_id, 'MESSAGE_CREATE', ARRAY[fresh.user_low, fresh.user_high],
               {message_object_sql("sent")}
               || CASE WHEN $5::text IS NULL THEN '{{}}'::jsonb
                       ELSE jsonb_build_object('nonce', $5::text) END
        FROM sent
        CROSS JOIN fresh
        {profile_of_sql("sent.owner_id")}
    )
    SELECT id FROM sent
"""  # noqa: S608 (only the constant fragments above are formatted in)


async def send_as_member(
    db: Executor,
    *,
    chat_id: int,
    user_id: int,
    text: str,
    answer_id: int | None,
    nonce: str | None = None,
) -> int | None:
    """The new message's id; None when nothing was written (no such chat, not a member, a reply
    target outside the chat, or a repeated nonce)."""
    message_id = await db.fetchval(SEND_SQL, chat_id, user_id, text, answer_id, nonce)
    return int(message_id) if message_id is not None else None


FIRST_OF_NONCE_SQL = f"""
    SELECT message_id FROM private_chat.send_nonces
    WHERE chat_id = $1::bigint AND owner_id = $2::bigint AND nonce = $3::text
      AND created_at > clock_timestamp() - {NONCE_WINDOW_SQL}
"""  # noqa: S608 (a constant formatted in)


async def first_of_nonce(db: Executor, *, chat_id: int, user_id: int, nonce: str) -> int | None:
    """The id of the message the author sent with this nonce in this chat within the window."""
    message_id = await db.fetchval(FIRST_OF_NONCE_SQL, chat_id, user_id, nonce)
    return int(message_id) if message_id is not None else None


# Nonces past the window only take space (a repeat past it takes the row over anyway).
SWEEP_NONCES_SQL = f"""
    DELETE FROM private_chat.send_nonces WHERE created_at <= clock_timestamp() - {NONCE_WINDOW_SQL}
"""  # noqa: S608 (a constant formatted in)


async def sweep_nonces(db: Executor) -> int:
    status = await db.execute(SWEEP_NONCES_SQL)
    return int(status.rsplit(" ", 1)[-1])


# The chat row's lock, taken first by an edit or a delete as by a send (see SEND_SQL), by a member
# only: a stranger's request locks nothing.
_LOCK_AS_MEMBER_SQL = """
    SELECT id, user_low, user_high FROM private_chat.chats
    WHERE id = $1::bigint AND (user_low = $2::bigint OR user_high = $2::bigint)
    FOR NO KEY UPDATE
"""

# Edit, in one statement: the author's message gets the new text and edited_at, and its
# MESSAGE_UPDATE outbox row carries the edited message object, which is also the answer.
EDIT_SQL = f"""
    WITH locked AS ({_LOCK_AS_MEMBER_SQL}
    ), edited AS (
        UPDATE private_chat.messages AS message
        SET text = $4::text, edited_at = clock_timestamp()
        FROM locked
        WHERE message.chat_id = locked.id AND message.id = $3::bigint AND message.owner_id = $2::bigint
        RETURNING message.id, message.text, message.answer_id, message.chat_id, message.owner_id,
                  message.created_at, message.edited_at
    ), announced AS (
        INSERT INTO private_chat.outbox (chat_id, kind, recipients, payload)
        SELECT edited.chat_id, 'MESSAGE_UPDATE', ARRAY[locked.user_low, locked.user_high],
               {message_object_sql("edited")}
        FROM edited
        CROSS JOIN locked
        {profile_of_sql("edited.owner_id")}
        RETURNING payload
    )
    SELECT payload::text FROM announced
"""  # noqa: S608 (only the constant fragments above are formatted in)


async def edit_as_author(
    db: Executor, *, chat_id: int, user_id: int, message_id: int, text: str
) -> str | None:
    """The edited message object as JSON text; None when nothing was changed."""
    result: str | None = await db.fetchval(EDIT_SQL, chat_id, user_id, message_id, text)
    return result


# Delete, in one statement: the author's message row is deleted (its text with it) and its
# MESSAGE_DELETE outbox row written. Replies keep their answer id.
DELETE_SQL = f"""
    WITH locked AS ({_LOCK_AS_MEMBER_SQL}
    ), removed AS (
        DELETE FROM private_chat.messages AS message
        USING locked
        WHERE message.chat_id = locked.id AND message.id = $3::bigint AND message.owner_id = $2::bigint
        RETURNING message.id, message.chat_id
    ), announced AS (
        INSERT INTO private_chat.outbox (chat_id, kind, recipients, payload)
        SELECT removed.chat_id, 'MESSAGE_DELETE', ARRAY[locked.user_low, locked.user_high],
               jsonb_build_object('id', removed.id, 'chat_id', removed.chat_id)
        FROM removed
        CROSS JOIN locked
    )
    SELECT id FROM removed
"""  # noqa: S608 (only the constant fragments above are formatted in)


async def delete_as_author(db: Executor, *, chat_id: int, user_id: int, message_id: int) -> bool:
    return await db.fetchval(DELETE_SQL, chat_id, user_id, message_id) is not None


# After an edit or delete changed nothing: which answer (no chat, not a member, no message, not
# the author).
MESSAGE_ACCESS_SQL = """
    SELECT chat.user_low, chat.user_high, message.owner_id
    FROM private_chat.chats AS chat
    LEFT JOIN private_chat.messages AS message ON message.chat_id = chat.id AND message.id = $2::bigint
    WHERE chat.id = $1::bigint
"""


async def message_access(db: Executor, chat_id: int, message_id: int) -> MessageAccessRow | None:
    row = await db.fetchrow(MESSAGE_ACCESS_SQL, chat_id, message_id)
    return MessageAccessRow._make(row) if row is not None else None


# One message with its owner, the member check riding along (as in a page).
MEMBER_MESSAGE_SQL = f"""
    SELECT message.id, message.text, message.answer_id, message.chat_id, message.owner_id,
           message.created_at, message.edited_at, coalesce(profile.username, 'deleted'), profile.avatar_url
    FROM private_chat.messages AS message
    {profile_of_sql("message.owner_id")}
    WHERE message.chat_id = $1::bigint AND message.id = $3::bigint
      AND EXISTS (
        SELECT 1 FROM private_chat.chats
        WHERE id = $1::bigint AND (user_low = $2::bigint OR user_high = $2::bigint))
"""  # noqa: S608 (a constant fragment formatted in)


async def member_message(db: Executor, chat_id: int, user_id: int, message_id: int) -> PageRow | None:
    """None when the chat is missing, not the user's, or has no such message."""
    row = await db.fetchrow(MEMBER_MESSAGE_SQL, chat_id, user_id, message_id)
    return PageRow._make(row) if row is not None else None


def _page_sql(*, before: bool, after: bool) -> str:
    """One page, newest first, with each owner's user object joined in and the member check riding
    along: one round trip.

    The chat's row is read once, by key, and only if the user is a member (`chat`). The inner
    select is a range scan of messages_pkey (chat_id, id): backward from the newest (or from
    `before`), or forward from `after` (the next page toward the present), run only when `chat`
    has its row. Every message of a private chat is one of its two members' (a send checks it),
    so the owners come from the members' two profiles, read once by key (`member`). Joined per
    row instead, the page let PostgreSQL merge or hash it against the whole users table (the
    cached plan cannot see LIMIT's value and expects thousands of rows): every profile below the
    owners' ids read for each page, 110 ms with a million users.

    The statement starts with SELECT (its CTEs sit in a subquery), so the pool takes it for the
    read it is (`common.db.is_read`): the connection goes back without asyncpg's reset query, and
    a page cut by a broken connection is asked again. Written with its WITH on top, it passed for
    a write, and every page paid the reset's round trip.

    Parameters: $1 chat, $2 user, $3 limit, $4 offset, then `before` and/or `after`.
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
    SELECT * FROM (
        WITH chat AS MATERIALIZED (
            SELECT user_low, user_high FROM private_chat.chats
            WHERE id = $1::bigint AND (user_low = $2::bigint OR user_high = $2::bigint)
        ), member AS MATERIALIZED (
            SELECT profile.id, profile.username, profile.avatar_url
            FROM chat JOIN users.public_profiles AS profile ON profile.id IN (chat.user_low, chat.user_high)
        )
        SELECT page.id, page.text, page.answer_id, page.chat_id, page.owner_id, page.created_at,
               page.edited_at, coalesce(member.username, 'deleted'), member.avatar_url
        FROM (
            SELECT id, text, answer_id, chat_id, owner_id, created_at, edited_at
            FROM private_chat.messages
            WHERE {" AND ".join(conditions)} AND EXISTS (SELECT 1 FROM chat)
            ORDER BY id {direction}
            LIMIT $3::bigint OFFSET $4::bigint
        ) AS page
        LEFT JOIN member ON member.id = page.owner_id
        ORDER BY page.id DESC
    ) AS owned_page
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
