"""QR-login tickets

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0002"
down_revision: str | None = "auth_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "qr_tickets",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id",
            sa.BigInteger(),
            sa.ForeignKey("auth.credentials.user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('minted', 'accepted', 'consumed')", name="qr_tickets_state"),
        sa.CheckConstraint("(state = 'minted') = (client_id IS NULL)", name="qr_tickets_client_id"),
        schema="auth",
    )
    # Housekeeping deletes by expiry.
    op.create_index("qr_tickets_expires_at", "qr_tickets", ["expires_at"], schema="auth")
    # Also serves the foreign key when an account's credentials are deleted.
    op.create_index("qr_tickets_user", "qr_tickets", ["user_id", "expires_at"], schema="auth")


def downgrade() -> None:
    op.drop_table("qr_tickets", schema="auth")
