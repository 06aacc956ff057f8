"""log out everywhere: a per-user cutoff for tokens, and the token that minted each QR ticket

Revision ID: auth_0003
Revises: auth_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0003"
down_revision: str | None = "auth_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per user who logged out everywhere: every token issued before `not_before` is dead.
    op.create_table(
        "token_cutoffs",
        sa.Column("user_id", sa.BigInteger(), primary_key=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        schema="auth",
    )
    # Contract v1 for the gateway and the events service, beside auth.revoked_access_tokens.
    op.execute("CREATE VIEW auth.access_token_cutoffs AS SELECT user_id, not_before FROM auth.token_cutoffs")
    # A ticket dies with the token that minted it (revoked, or issued before a cutoff). Tickets
    # minted before this revision (at most a ticket lifetime old) have neither and are judged by
    # their own creation time.
    op.add_column("qr_tickets", sa.Column("minted_by_jti", sa.Text(), nullable=True), schema="auth")
    op.add_column(
        "qr_tickets", sa.Column("minted_by_issued_at", sa.DateTime(timezone=True), nullable=True), schema="auth"
    )


def downgrade() -> None:
    op.drop_column("qr_tickets", "minted_by_issued_at", schema="auth")
    op.drop_column("qr_tickets", "minted_by_jti", schema="auth")
    op.execute("DROP VIEW auth.access_token_cutoffs")
    op.drop_table("token_cutoffs", schema="auth")
