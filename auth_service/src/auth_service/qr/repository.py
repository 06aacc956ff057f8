"""Every SQL statement about QR tickets. Each state change is one conditional UPDATE."""

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from auth_service.models import credentials, revoked_tokens, token_cutoffs
from auth_service.qr.models import public_profiles, qr_tickets


def _minting_token_alive() -> ColumnElement[bool]:
    """A ticket dies with the token that minted it: revoked by logout, or issued before a log out
    everywhere (a ticket from before the minting token was recorded goes by its own creation)."""
    issued_at = func.coalesce(qr_tickets.c.minted_by_issued_at, qr_tickets.c.created_at)
    return ~exists().where(revoked_tokens.c.jti == qr_tickets.c.minted_by_jti) & ~exists().where(
        token_cutoffs.c.user_id == qr_tickets.c.user_id, token_cutoffs.c.not_before > issued_at
    )


async def insert_minted(
    conn: AsyncConnection,
    ticket_id: uuid.UUID,
    user_id: int,
    expires_at: int,
    *,
    minted_by_jti: str,
    minted_by_issued_at: float,
) -> bool:
    """Only an active account gets a ticket; False when there is none."""
    source = select(
        literal(ticket_id).label("id"),
        credentials.c.user_id,
        literal("minted").label("state"),
        literal(datetime.fromtimestamp(expires_at, UTC)).label("expires_at"),
        literal(minted_by_jti).label("minted_by_jti"),
        literal(datetime.fromtimestamp(minted_by_issued_at, UTC)).label("minted_by_issued_at"),
    ).where(credentials.c.user_id == user_id, credentials.c.state == "active")
    statement = (
        insert(qr_tickets)
        .from_select(["id", "user_id", "state", "expires_at", "minted_by_jti", "minted_by_issued_at"], source)
        .returning(qr_tickets.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def count_live(conn: AsyncConnection, user_id: int) -> int:
    statement = select(func.count()).where(
        qr_tickets.c.user_id == user_id,
        qr_tickets.c.state == "minted",
        qr_tickets.c.expires_at > func.now(),
    )
    return int((await conn.execute(statement)).scalar_one())


async def mark_accepted(conn: AsyncConnection, ticket_id: uuid.UUID, user_id: int, client_id: str) -> bool:
    statement = (
        update(qr_tickets)
        .where(
            qr_tickets.c.id == ticket_id,
            qr_tickets.c.user_id == user_id,
            qr_tickets.c.state == "minted",
            qr_tickets.c.expires_at > func.now(),
            _minting_token_alive(),
        )
        .values(state="accepted", client_id=client_id, accepted_at=func.now())
        .returning(qr_tickets.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def mark_consumed(conn: AsyncConnection, ticket_id: uuid.UUID, user_id: int, client_id: str) -> bool:
    """Accepted for this very hub, unexpired, the minting token alive, the account still active."""
    statement = (
        update(qr_tickets)
        .where(
            qr_tickets.c.id == ticket_id,
            qr_tickets.c.user_id == user_id,
            qr_tickets.c.state == "accepted",
            qr_tickets.c.client_id == client_id,
            qr_tickets.c.expires_at > func.now(),
            credentials.c.user_id == qr_tickets.c.user_id,
            credentials.c.state == "active",
            _minting_token_alive(),
        )
        .values(state="consumed", consumed_at=func.now())
        .returning(qr_tickets.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def delete_expired(conn: AsyncConnection) -> int:
    # An expired ticket no longer decodes, so forgetting its row cannot re-open it.
    statement = qr_tickets.delete().where(qr_tickets.c.expires_at < func.now())
    return (await conn.execute(statement)).rowcount or 0


async def public_user(
    conn: AsyncConnection, user_id: int, jti: str, issued_at: float
) -> dict[str, Any] | None:
    """The public user object behind an access token: an active account, the token neither
    revoked nor issued before a log out everywhere."""
    statement = (
        select(public_profiles.c.id, public_profiles.c.username, public_profiles.c.avatar_url)
        .join(credentials, credentials.c.user_id == public_profiles.c.id)
        .where(
            public_profiles.c.id == user_id,
            credentials.c.state == "active",
            ~exists().where(revoked_tokens.c.jti == jti),
            ~exists().where(
                token_cutoffs.c.user_id == user_id,
                token_cutoffs.c.not_before > datetime.fromtimestamp(issued_at, UTC),
            ),
        )
    )
    row = (await conn.execute(statement)).mappings().first()
    return dict(row) if row is not None else None
