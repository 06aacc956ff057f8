"""private_chat.member_chats readable by the events service (contract role private_chat_members_reader)

Revision ID: private_chat_0004
Revises: private_chat_0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "private_chat_0004"
down_revision: str | None = "private_chat_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The published views go to the contract role `private_chat_members_reader` (NOLOGIN): a service that may read
# them is made a member of it by whoever sets up the database roles (devstack.roles,
# ops/postgres/init-roles.sh). A database without that role (one role for everything, given by
# DATABASE_URL) has nothing to grant.


def upgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'private_chat_members_reader') THEN
            GRANT USAGE ON SCHEMA private_chat TO private_chat_members_reader;
            GRANT SELECT ON private_chat.member_chats TO private_chat_members_reader;
          END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'private_chat_members_reader') THEN
            REVOKE SELECT ON private_chat.member_chats FROM private_chat_members_reader;
            REVOKE USAGE ON SCHEMA private_chat FROM private_chat_members_reader;
          END IF;
        END $$
        """
    )
