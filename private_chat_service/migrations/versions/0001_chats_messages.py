"""chats and messages

Revision ID: private_chat_0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "private_chat_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("user_low", sa.BigInteger(), nullable=False),
        sa.Column("user_high", sa.BigInteger(), nullable=False),
        sa.Column("starter_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column(
            "last_activity_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("user_low", "user_high", name="chats_pair_key"),
        sa.CheckConstraint("user_low < user_high", name="chats_pair_ordered"),
        sa.CheckConstraint("starter_id IN (user_low, user_high)", name="chats_starter_member"),
        schema="private_chat",
    )
    op.create_index(
        "chats_low_activity", "chats", ["user_low", "last_activity_at", "id"], schema="private_chat"
    )
    op.create_index(
        "chats_high_activity", "chats", ["user_high", "last_activity_at", "id"], schema="private_chat"
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("answer_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("chat_id", "id", name="messages_pkey"),
        sa.ForeignKeyConstraint(["chat_id"], ["private_chat.chats.id"], name="messages_chat_fkey"),
        sa.ForeignKeyConstraint(
            ["chat_id", "answer_id"],
            ["private_chat.messages.chat_id", "private_chat.messages.id"],
            name="messages_answer_same_chat_fkey",
        ),
        sa.CheckConstraint("char_length(text) BETWEEN 1 AND 2000", name="messages_text_length"),
        schema="private_chat",
    )


def downgrade() -> None:
    op.drop_table("messages", schema="private_chat")
    op.drop_table("chats", schema="private_chat")
