"""Runs the whole stack on one machine without Docker: PostgreSQL, migrations, services, nginx.

Used by `make run` / `make up` / `make down` and by the end-to-end tests, so both start the stack
the same way.
"""

from devstack.config import StackConfig
from devstack.stack import Stack

__all__ = ["Stack", "StackConfig"]
