"""the token views readable by the token checkers (contract role auth_tokens_reader)

Revision ID: auth_0004
Revises: auth_0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "auth_0004"
down_revision: str | None = "auth_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The published views go to the contract role `auth_tokens_reader` (NOLOGIN): a service that may read
# them is made a member of it by whoever sets up the database roles (devstack.roles,
# ops/postgres/init-roles.sh). A database without that role (one role for everything, given by
# DATABASE_URL) has nothing to grant.


def upgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'auth_tokens_reader') THEN
            GRANT USAGE ON SCHEMA auth TO auth_tokens_reader;
            GRANT SELECT ON auth.revoked_access_tokens TO auth_tokens_reader;
            GRANT SELECT ON auth.access_token_cutoffs TO auth_tokens_reader;
          END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'auth_tokens_reader') THEN
            REVOKE SELECT ON auth.revoked_access_tokens FROM auth_tokens_reader;
            REVOKE SELECT ON auth.access_token_cutoffs FROM auth_tokens_reader;
            REVOKE USAGE ON SCHEMA auth FROM auth_tokens_reader;
          END IF;
        END $$
        """
    )
