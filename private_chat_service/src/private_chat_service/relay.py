"""The outbox relay: publishes committed outbox rows to Redis, then deletes them.

It runs in every chat-service instance; an advisory lock lets one batch run at a time across
all of them. A batch is one transaction: lock, read the oldest rows, publish them with one call
of the publication script, delete them, commit. Redis unreachable: the transaction rolls back
and the rows wait (retried with backoff). A relay that dies after publishing and before its
commit leaves the rows; the next batch publishes them again and the script's dedupe marks (one
per outbox id) make that a no-op, so no session sees an event twice.

The instance that writes an outbox row wakes its own relay at once (`wake`); every relay also
looks on its own every `poll_seconds`, for rows another instance left behind.
"""

import asyncio
import contextlib
import logging

import asyncpg

from common.events import Event, EventPublisher
from common.metrics import EVENTS_PUBLISHED, OUTBOX_LAG
from common.outages import is_outage
from private_chat_service import repository

logger = logging.getLogger("private_chat_service.relay")

# A relay that finds the lock taken tries again after this (the holder may have read its batch
# before our row committed).
LOCK_RETRY_SECONDS = 0.002
MAX_BACKOFF_SECONDS = 1.0


class Relay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: EventPublisher,
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.5,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """Rows were committed: publish them now rather than at the next poll."""
        self._wanted.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            # The flag as well as the cancel: on Python 3.11 a cancel that lands as the poll's
            # timeout fires comes back as that TimeoutError (fixed in 3.12), which the loop
            # suppresses; the loop then ends at its next turn instead of running forever.
            self._stopping = True
            self._wanted.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish_batch(self) -> int | None:
        """How many rows one batch published; None when another relay holds the lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await repository.lock_relay(conn):
                return None
            rows = await repository.outbox_batch(conn, self.batch_size)
            OUTBOX_LAG.set(rows[0].age_seconds if rows else 0.0)
            if not rows:
                return 0
            await self.publisher.publish(
                [Event(str(row.id), row.kind, row.recipients, row.payload) for row in rows]
            )
            await repository.delete_outbox(conn, [row.id for row in rows])
        for row in rows:
            EVENTS_PUBLISHED.labels(row.kind).inc()
        return len(rows)

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            # Cleared before the read: a wake during the batch makes the loop look again.
            self._wanted.clear()
            try:
                published = await self.publish_batch()
            except Exception as exc:
                # The relay must outlive anything a batch meets: a loop that died would leave
                # every later event in the outbox. An outage is expected (PostgreSQL restarting,
                # Redis away: asyncpg even reports a connection caught mid-goodbye as an internal
                # error); anything else is logged with its traceback, and retried all the same.
                if is_outage(exc):
                    logger.warning("outbox relay failed, retrying", extra={"error": repr(exc)})
                else:
                    logger.exception("outbox relay failed unexpectedly, retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                self._wanted.set()
                continue
            backoff = 0.05
            if published is None:
                await asyncio.sleep(LOCK_RETRY_SECONDS)
                self._wanted.set()
            elif published == 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self._wanted.wait()
