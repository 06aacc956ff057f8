"""Every SQL statement of the events service (asyncpg; see common.db). The service owns no table:
READY reads the views other services publish (`private_chat.member_chats`,
`users.public_profiles`), and the token check reads `auth.revoked_access_tokens`
(common.access)."""

from typing import NamedTuple

from common.db import Executor

# READY's `user` and `chats`, built as JSON text by PostgreSQL in one round trip: the events
# service splices them into the frame without decoding them. Chats come most recently active
# first (as GET /private/chat-list/ lists them).
READY_SQL = """
    SELECT json_build_object(
               'id', $1::bigint, 'username', coalesce(me.username, 'deleted'),
               'avatar_url', me.avatar_url)::text,
           (SELECT coalesce(json_agg(json_build_object(
                        'id', chat.chat_id,
                        'companion', json_build_object(
                            'id', chat.companion_id,
                            'username', coalesce(companion.username, 'deleted'),
                            'avatar_url', companion.avatar_url),
                        'last_message_id', chat.last_message_id)
                    ORDER BY chat.last_activity_at DESC, chat.chat_id DESC), '[]'::json)::text
            FROM private_chat.member_chats AS chat
            LEFT JOIN users.public_profiles AS companion ON companion.id = chat.companion_id
            WHERE chat.user_id = $1::bigint)
    FROM (SELECT 1) AS one
    LEFT JOIN users.public_profiles AS me ON me.id = $1::bigint
"""


class ReadyParts(NamedTuple):
    user_json: str
    chats_json: str


async def ready_parts(db: Executor, user_id: int) -> ReadyParts:
    row = await db.fetchrow(READY_SQL, user_id)
    return ReadyParts(row[0], row[1])
