"""Applies every service's Alembic history to a database (make run, the test stacks, tests)."""

import os
import subprocess
import sys
import time
from collections.abc import Callable

from devstack.config import REPO_ROOT, present_services


class MigrationError(RuntimeError):
    pass


def migrations() -> list[str]:
    """Packages with an Alembic history, in the service table's (dependency) order."""
    return [spec.package for spec in present_services() if spec.migrations]


def migrate(
    database_url: str,
    on_done: Callable[[str, float], None] | None = None,
    urls: dict[str, str] | None = None,
) -> None:
    """`urls` maps a package to the URL its migrations run with (its own role, which owns its
    schema); a package not in it uses `database_url`."""
    for package in migrations():
        env = {**os.environ, "DATABASE_URL": (urls or {}).get(package, database_url)}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / package / "alembic.ini"),
             "upgrade", "head"],
            env=env, cwd=REPO_ROOT / package, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise MigrationError(
                f"migrations of {package} failed:\n{(result.stdout + result.stderr).strip()}\n"
                f"What to do: fix the migration (alembic -c {package}/alembic.ini), or start from an "
                "empty database (`make clean`)."
            )
        if on_done is not None:
            on_done(package, time.monotonic() - started)
