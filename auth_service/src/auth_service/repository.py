"""Every SQL statement of the auth service."""

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from auth_service.models import credentials, revoked_tokens


async def insert_pending(
    conn: AsyncConnection,
    *,
    email: str | None,
    password_hash: str | None,
    yandex_id: str | None = None,
) -> int:
    statement = (
        insert(credentials)
        .values(email=email, password_hash=password_hash, yandex_id=yandex_id, state="pending")
        .returning(credentials.c.user_id)
    )
    return int((await conn.execute(statement)).scalar_one())


async def activate(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(update(credentials).where(credentials.c.user_id == user_id).values(state="active"))


async def delete_credentials(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(delete(credentials).where(credentials.c.user_id == user_id))


async def active_by_email(conn: AsyncConnection, email: str) -> dict[str, Any] | None:
    statement = select(credentials.c.user_id, credentials.c.password_hash).where(
        credentials.c.email == email, credentials.c.state == "active"
    )
    row = (await conn.execute(statement)).mappings().first()
    return dict(row) if row else None


async def active_by_yandex_id(conn: AsyncConnection, yandex_id: str) -> int | None:
    statement = select(credentials.c.user_id).where(
        credentials.c.yandex_id == yandex_id, credentials.c.state == "active"
    )
    user_id = (await conn.execute(statement)).scalar_one_or_none()
    return int(user_id) if user_id is not None else None


async def set_password_hash(conn: AsyncConnection, user_id: int, password_hash: str) -> None:
    await conn.execute(
        update(credentials).where(credentials.c.user_id == user_id).values(password_hash=password_hash)
    )


async def stale_pending(conn: AsyncConnection, older_than: timedelta) -> list[int]:
    cutoff = datetime.now(UTC) - older_than
    statement = select(credentials.c.user_id).where(
        credentials.c.state == "pending", credentials.c.created_at < cutoff
    )
    return [int(user_id) for user_id in (await conn.execute(statement)).scalars()]


async def revoke(conn: AsyncConnection, jti: str, expires_at: datetime) -> None:
    await conn.execute(insert(revoked_tokens).values(jti=jti, expires_at=expires_at).on_conflict_do_nothing())


async def purge_expired_revocations(conn: AsyncConnection) -> None:
    await conn.execute(delete(revoked_tokens).where(revoked_tokens.c.expires_at < datetime.now(UTC)))
