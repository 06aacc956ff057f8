"""users.public_profiles readable by the services that read it (contract role users_public_reader)

Revision ID: users_0002
Revises: users_0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "users_0002"
down_revision: str | None = "users_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The published views go to the contract role `users_public_reader` (NOLOGIN): a service that may read
# them is made a member of it by whoever sets up the database roles (devstack.roles,
# ops/postgres/init-roles.sh). A database without that role (one role for everything, given by
# DATABASE_URL) has nothing to grant.


def upgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'users_public_reader') THEN
            GRANT USAGE ON SCHEMA users TO users_public_reader;
            GRANT SELECT ON users.public_profiles TO users_public_reader;
          END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'users_public_reader') THEN
            REVOKE SELECT ON users.public_profiles FROM users_public_reader;
            REVOKE USAGE ON SCHEMA users FROM users_public_reader;
          END IF;
        END $$
        """
    )
