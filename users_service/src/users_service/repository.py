"""Every SQL statement of the users service."""

from typing import Any

from sqlalchemy import case, delete, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from users_service.models import users


async def insert_user(conn: AsyncConnection, user_id: int, values: dict[str, Any]) -> bool:
    """Insert; False when a user with that id already exists (the call is retried idempotently)."""
    statement = (
        insert(users)
        .values(id=user_id, **values)
        .on_conflict_do_nothing(index_elements=[users.c.id])
        .returning(users.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def get_user(conn: AsyncConnection, user_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(select(users).where(users.c.id == user_id))).mappings().first()
    return dict(row) if row else None


async def delete_user(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(delete(users).where(users.c.id == user_id))


def escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_by_prefix(conn: AsyncConnection, prefix: str, limit: int) -> list[dict[str, Any]]:
    statement = (
        select(users.c.id, users.c.username, users.c.avatar_url)
        .where(users.c.username.like(escape_like(prefix) + "%", escape="\\"))
        .order_by(case((users.c.username == literal(prefix), 0), else_=1), users.c.username)
        .limit(limit)
    )
    return [dict(row) for row in (await conn.execute(statement)).mappings()]
