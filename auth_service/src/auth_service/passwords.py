"""argon2id hashing, always off the event loop and with bounded concurrency (each hash costs MiBs)."""

from collections.abc import Callable
from typing import TypeVar

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common.metrics import PASSWORD_HASHING

T = TypeVar("T")


class Passwords:
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int, concurrency: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self._limiter = anyio.CapacityLimiter(concurrency)
        # Verified when the email is unknown, so that answer costs as much as a wrong password.
        self._dummy_hash = self._hasher.hash("dummy password for timing equalisation")

    async def hash(self, password: str) -> str:
        return await self._in_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await self._in_thread(lambda: self._verify_sync(password_hash, password))

    async def _in_thread(self, work: Callable[..., T], *args: object) -> T:
        """Runs one hash on a worker thread once one of the `concurrency` slots is free; the
        waiting and running counts are metrics (a growing queue means log-ins wait on CPU)."""
        waiting, running = PASSWORD_HASHING.labels("waiting"), PASSWORD_HASHING.labels("running")
        waiting.inc()
        try:
            await self._limiter.acquire()
        finally:
            waiting.dec()
        running.inc()
        try:
            return await anyio.to_thread.run_sync(work, *args)
        finally:
            running.dec()
            self._limiter.release()

    def _verify_sync(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
