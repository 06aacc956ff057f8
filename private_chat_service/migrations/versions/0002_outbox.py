"""the event outbox, and the member_chats view the events service reads

Revision ID: private_chat_0002
Revises: private_chat_0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "private_chat_0002"
down_revision: str | None = "private_chat_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per event, written in the same statement or transaction as the change it announces;
    # the relay publishes committed rows to Redis and deletes them.
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("recipients", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema="private_chat",
    )
    # Published read contract (versioned: columns are only ever added): each member's chats with
    # the other member and the newest message id. The events service builds READY from it.
    # A UNION ALL (not a lateral pair) so that `WHERE user_id = $1` reaches each half as an index
    # condition (chats_low_activity, chats_high_activity) instead of filtering every chat.
    op.execute(
        """
        CREATE VIEW private_chat.member_chats AS
        SELECT user_low AS user_id, id AS chat_id, user_high AS companion_id, last_activity_at,
               (SELECT max(m.id) FROM private_chat.messages AS m WHERE m.chat_id = chats.id)
                   AS last_message_id
        FROM private_chat.chats
        UNION ALL
        SELECT user_high, id, user_low, last_activity_at,
               (SELECT max(m.id) FROM private_chat.messages AS m WHERE m.chat_id = chats.id)
        FROM private_chat.chats
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW private_chat.member_chats")
    op.drop_table("outbox", schema="private_chat")
