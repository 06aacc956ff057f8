"""Every SQL statement of the users service."""

from datetime import datetime
from typing import TypedDict

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.rules import USERNAME_ALPHABET
from users_service.models import users
from users_service.schemas import NewUser


class UserRow(TypedDict):
    """A user object (API.md): what search answers."""

    id: int
    username: str
    avatar_url: str | None


class ProfileRow(UserRow):
    description: str
    status: str
    created_at: datetime


_PROFILE_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.avatar_url,
    users.c.description,
    users.c.status,
    users.c.created_at,
)


async def insert_user(conn: AsyncConnection, user_id: int, new: NewUser) -> bool:
    """Insert; False when a user with that id already exists (the call is retried idempotently)."""
    statement = (
        insert(users)
        .values(id=user_id, **new.model_dump())
        .on_conflict_do_nothing(index_elements=[users.c.id])
        .returning(users.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def get_user(conn: AsyncConnection, user_id: int) -> ProfileRow | None:
    row = (await conn.execute(select(*_PROFILE_COLUMNS).where(users.c.id == user_id))).first()
    if row is None:
        return None
    return ProfileRow(
        id=row.id,
        username=row.username,
        avatar_url=row.avatar_url,
        description=row.description,
        status=row.status,
        created_at=row.created_at,
    )


async def delete_user(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(delete(users).where(users.c.id == user_id))


# A prefix as a byte-wise range served by `users_username_prefix` (text_pattern_ops), whatever
# the database collation, and the same plan for bound parameters (generic plans included): a
# LIKE pattern is only index-usable while the planner sees it as a constant. Ordering with the
# index's own operator reads matches in index order, so LIMIT stops early without a sort; the
# exact match is the smallest string with that prefix, so it always comes first.
SEARCH_SQL = text(
    """
    SELECT id, username, avatar_url
    FROM users.users
    WHERE username ~>=~ :low AND username ~<~ :high
    ORDER BY username USING ~<~
    LIMIT :limit
    """
)


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """[low, high) holding exactly the strings that start with `prefix` (ASCII alphabet)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def search_by_prefix(conn: AsyncConnection, prefix: str, limit: int) -> list[UserRow]:
    """`prefix` is already lower-cased; any character a username cannot hold matches nothing,
    so `%` and `_` are plain characters (there is no LIKE pattern at all)."""
    if not prefix or not set(prefix) <= USERNAME_ALPHABET:
        return []
    low, high = prefix_bounds(prefix)
    result = await conn.execute(SEARCH_SQL, {"low": low, "high": high, "limit": limit})
    return [UserRow(id=row.id, username=row.username, avatar_url=row.avatar_url) for row in result]


async def get_avatar_key(conn: AsyncConnection, user_id: int) -> tuple[bool, str | None]:
    """(user exists, current avatar key). The row is locked until the transaction ends."""
    row = (
        await conn.execute(select(users.c.avatar_key).where(users.c.id == user_id).with_for_update())
    ).first()
    return (row is not None, row[0] if row else None)


async def set_avatar(conn: AsyncConnection, user_id: int, *, key: str, url: str) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(avatar_key=key, avatar_url=url))


# Namespace of this service's advisory locks (first int of pg_advisory_lock(int, int)).
AVATAR_LOCK_NAMESPACE = 0x5553_0001


async def lock_user_avatar(conn: AsyncConnection, user_id: int) -> None:
    """Session-level lock: one avatar change per user at a time, from storing the new object to
    deleting the old one (a content-addressed key can come back while an older upload deletes it)."""
    await conn.execute(
        text("SELECT pg_advisory_lock(:ns, (CAST(:uid AS bigint) % 2147483647)::int)"),
        {"ns": AVATAR_LOCK_NAMESPACE, "uid": user_id},
    )


async def unlock_user_avatar(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(
        text("SELECT pg_advisory_unlock(:ns, (CAST(:uid AS bigint) % 2147483647)::int)"),
        {"ns": AVATAR_LOCK_NAMESPACE, "uid": user_id},
    )
