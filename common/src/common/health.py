"""Readiness: `/readyz` answers 200 only when what the service needs answers (its database, and
Redis where it uses it); `/healthz` stays the liveness check (the process serves)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Check = Callable[[], Awaitable[Any]]


class Readiness:
    def __init__(self, timeout: float = 2.0, **checks: Check) -> None:
        self.timeout = timeout
        self.checks = checks

    async def check(self) -> dict[str, str]:
        """Each dependency's state, "ok" or why not; checked at once, each within the timeout."""

        async def one(check: Check) -> str:
            try:
                await asyncio.wait_for(check(), self.timeout)
            except TimeoutError:
                return "timed out"
            except Exception as exc:
                return type(exc).__name__
            return "ok"

        states = await asyncio.gather(*(one(check) for check in self.checks.values()))
        return dict(zip(self.checks, states, strict=True))


def database_check(executor: Any) -> Check:
    """An asyncpg pool answers `SELECT 1`."""

    async def check() -> None:
        await executor.fetchval("SELECT 1")

    return check


def engine_check(engine: Any) -> Check:
    """A SQLAlchemy async engine answers `SELECT 1`."""
    from sqlalchemy import text

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check
