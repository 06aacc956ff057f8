"""credentials and revoked tokens

Revision ID: auth_0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("user_id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("yandex_id", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("state IN ('pending', 'active')", name="credentials_state"),
        sa.CheckConstraint("email = lower(email)", name="credentials_email_lower"),
        sa.UniqueConstraint("yandex_id", name="credentials_yandex_id_key"),
        schema="auth",
    )
    op.create_index(
        "credentials_email_key",
        "credentials",
        ["email"],
        unique=True,
        schema="auth",
        postgresql_where=sa.text("email IS NOT NULL"),
    )
    op.create_index(
        "credentials_pending",
        "credentials",
        ["created_at"],
        schema="auth",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "login_failures",
        sa.Column("email", sa.Text(), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        schema="auth",
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.Text(), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema="auth",
    )
    # Contract v1 for the gateway: which token ids are revoked.
    op.execute("CREATE VIEW auth.revoked_access_tokens AS SELECT jti, expires_at FROM auth.revoked_tokens")


def downgrade() -> None:
    op.execute("DROP VIEW auth.revoked_access_tokens")
    op.drop_table("revoked_tokens", schema="auth")
    op.drop_table("login_failures", schema="auth")
    op.drop_table("credentials", schema="auth")
