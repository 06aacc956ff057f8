"""Housekeeping jobs a service runs in its lifespan's task group."""

import logging
from collections.abc import Awaitable, Callable

import anyio

logger = logging.getLogger("common.periodic")


async def run_periodically(job: Callable[[], Awaitable[object]], interval: float, name: str) -> None:
    """`job` every `interval` seconds, first after one interval; a failure is logged and the next
    run comes on time (a database restart must not end housekeeping)."""
    while True:
        await anyio.sleep(interval)
        try:
            await job()
        except Exception:
            logger.exception("%s failed", name)
