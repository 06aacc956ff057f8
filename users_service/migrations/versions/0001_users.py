"""users table and the public_profiles contract view

Revision ID: users_0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "users_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.Text(), nullable=False, server_default=""),
        sa.Column("locale", sa.Text(), nullable=False, server_default="en"),
        sa.Column("avatar_url", sa.Text(), nullable=True),
        sa.Column("avatar_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("username", name="users_username_key"),
        sa.CheckConstraint("username ~ '^[a-z0-9_.]{2,32}$'", name="users_username_format"),
        schema="users",
    )
    op.create_index(
        "users_username_prefix",
        "users",
        ["username"],
        schema="users",
        postgresql_ops={"username": "text_pattern_ops"},
    )
    # Contract v1 for other services: (id, username, avatar_url). Columns are only ever added.
    op.execute("CREATE VIEW users.public_profiles AS SELECT id, username, avatar_url FROM users.users")


def downgrade() -> None:
    op.execute("DROP VIEW users.public_profiles")
    op.drop_table("users", schema="users")
