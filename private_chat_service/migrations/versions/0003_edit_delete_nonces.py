"""edited messages, deleted messages, send-once nonces

Revision ID: private_chat_0003
Revises: private_chat_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "private_chat_0003"
down_revision: str | None = "private_chat_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null until the first edit.
    op.add_column(
        "messages", sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True), schema="private_chat"
    )
    # A deleted message's row is deleted (its text is gone, and pages stay plain range scans of
    # messages_pkey however much of a chat was deleted). A reply keeps its answer id, so the reply
    # key can no longer point at a row that must exist: the same-chat rule is kept by the send
    # statement, which checks the target under the chat row's lock that every delete takes too.
    op.drop_constraint("messages_answer_same_chat_fkey", "messages", schema="private_chat")
    # Send-once: one row per (chat, author, nonce) whose message was stored in the last 10 minutes
    # (older rows are dead weight: reused in place, and swept by the service). The primary key is
    # what makes racing repeats store one message. The sweep reads the whole table, which holds
    # only the last minutes of nonces: no index on created_at to write on every send.
    op.create_table(
        "send_nonces",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "owner_id", "nonce", name="send_nonces_pkey"),
        sa.CheckConstraint("char_length(nonce) BETWEEN 1 AND 64", name="send_nonces_nonce_length"),
        schema="private_chat",
    )


def downgrade() -> None:
    op.drop_table("send_nonces", schema="private_chat")
    # Replies to deleted messages lose their answer id: the restored key needs a target.
    op.execute(
        "UPDATE private_chat.messages AS reply SET answer_id = NULL WHERE answer_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM private_chat.messages AS target"
        " WHERE target.chat_id = reply.chat_id AND target.id = reply.answer_id)"
    )
    op.create_foreign_key(
        "messages_answer_same_chat_fkey",
        "messages",
        "messages",
        ["chat_id", "answer_id"],
        ["chat_id", "id"],
        source_schema="private_chat",
        referent_schema="private_chat",
    )
    op.drop_column("messages", "edited_at", schema="private_chat")
