"""Every SQL statement of the auth service."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from auth_service.models import credentials, login_failures, revoked_tokens, token_cutoffs


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


@dataclass(frozen=True, slots=True)
class ActiveAccount:
    user_id: int
    # None for an account made with Yandex ID only (it cannot log in with a password).
    password_hash: str | None


async def active_by_email(conn: AsyncConnection, email: str) -> ActiveAccount | None:
    statement = select(credentials.c.user_id, credentials.c.password_hash).where(
        credentials.c.email == email, credentials.c.state == "active"
    )
    row = (await conn.execute(statement)).first()
    return ActiveAccount(int(row.user_id), row.password_hash) if row else None


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


async def cut_off_tokens(conn: AsyncConnection, user_id: int, not_before: datetime) -> None:
    """Every token of the user issued before `not_before` is dead from now on. A cutoff only moves
    forward (two racing requests leave the later one)."""
    statement = insert(token_cutoffs).values(user_id=user_id, not_before=not_before)
    statement = statement.on_conflict_do_update(
        index_elements=[token_cutoffs.c.user_id],
        set_={"not_before": func.greatest(token_cutoffs.c.not_before, statement.excluded.not_before)},
    )
    await conn.execute(statement)


async def purge_old_cutoffs(conn: AsyncConnection, older_than: timedelta) -> None:
    """A cutoff older than the longest a token (and a ticket it minted) lives cuts off nothing."""
    await conn.execute(delete(token_cutoffs).where(token_cutoffs.c.not_before < func.now() - older_than))


async def reserve_login_guess(conn: AsyncConnection, email: str, window: timedelta, allowance: int) -> bool:
    """Counts one password guess for the email before its hash is verified; False (nothing
    counted) when the window's `allowance` is spent.

    One statement, so concurrent log-ins cannot all read a count below the allowance: the row's
    lock orders them, and at most `allowance` guesses a window reach the password check. A window
    that has run out starts again at 1.
    """
    expired = login_failures.c.window_started_at <= func.now() - window
    statement = insert(login_failures).values(email=email, failures=1, window_started_at=func.now())
    counted = statement.on_conflict_do_update(
        index_elements=[login_failures.c.email],
        set_={
            "failures": case((expired, 1), else_=login_failures.c.failures + 1),
            "window_started_at": case((expired, func.now()), else_=login_failures.c.window_started_at),
        },
        where=or_(expired, login_failures.c.failures < allowance),
    ).returning(login_failures.c.failures)
    return (await conn.execute(counted)).first() is not None


async def login_window_start(conn: AsyncConnection, email: str) -> datetime:
    """When the email's current window of guesses started (now, if it has none)."""
    statement = select(login_failures.c.window_started_at).where(login_failures.c.email == email)
    started = (await conn.execute(statement)).scalar()
    return started if started is not None else datetime.now(UTC)


async def clear_login_failures(conn: AsyncConnection, email: str) -> None:
    await conn.execute(delete(login_failures).where(login_failures.c.email == email))


async def purge_old_login_failures(conn: AsyncConnection, window: timedelta) -> None:
    await conn.execute(delete(login_failures).where(login_failures.c.window_started_at < func.now() - window))
