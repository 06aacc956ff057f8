"""Applies every service's Alembic history to a database (make run, the test stacks, tests)."""

import os
import subprocess
import sys

from devstack.config import REPO_ROOT

# Each service's Alembic history, in dependency order (the chat service reads users' view).
MIGRATIONS = ("users_service", "auth_service", "private_chat_service")


class MigrationError(RuntimeError):
    pass


def migrate(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    for service in MIGRATIONS:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "alembic",
                "-c",
                str(REPO_ROOT / service / "alembic.ini"),
                "upgrade",
                "head",
            ],
            env=env,
            cwd=REPO_ROOT / service,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise MigrationError(f"migrations of {service} failed:\n{result.stdout}{result.stderr}")
