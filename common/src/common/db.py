"""How services connect to PostgreSQL.

Which access path a service uses, and why (one path per service, one pool per process sized by
`DB_POOL_SIZE`):
- SQLAlchemy Core on an async engine (`make_engine`): the auth and users services, whose routes
  are cold (a log-in costs an argon2 hash; an avatar, an image decode) and whose statements read
  best built from the table definitions their migrations share.
- Plain asyncpg with SQL text (`make_pool`): the chat service, the gateway and the events service,
  whose routes are the hot paths. SQLAlchemy's statement building and result processing was about
  a third of the chat service's CPU per send in profiles; their SQL lives in one repository module
  per service and is checked by plan tests.
No service uses the ORM's unit of work: every statement is written out, in a repository module.
"""

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.outages import is_outage
from common.settings import async_database_url

logger = logging.getLogger("common.db")

T = TypeVar("T")

# Defaults of DB_CONNECT_TIMEOUT_SECONDS and DB_STATEMENT_TIMEOUT_SECONDS (see DatabaseSettings).
CONNECT_TIMEOUT_SECONDS = 3.0
STATEMENT_TIMEOUT_SECONDS = 5.0
# After a failure to connect (the server refused, or answered "starting up"), the one retry waits
# this long: a fast restart of PostgreSQL takes about half a second.
RECONNECT_PAUSE_SECONDS = 0.5


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    application_name: str = "chat",
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
) -> AsyncEngine:
    """A SQLAlchemy engine whose pool holds at most `pool_size` connections."""
    return create_async_engine(
        async_database_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_recycle=1800,
        # A connection that died while pooled (a database restart) is replaced before use.
        pool_pre_ping=True,
        # Waiting for a free connection, connecting and each statement are bounded: a database
        # that does not answer gives a 503 after seconds, not a request hanging until nginx's
        # timeout.
        pool_timeout=connect_timeout + statement_timeout,
        connect_args={
            "server_settings": {"application_name": application_name},
            "timeout": connect_timeout,
            "command_timeout": statement_timeout,
        },
    )


def plain_database_url(url: str) -> str:
    """The URL as asyncpg itself takes it."""
    return async_database_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


# Set by `idempotent_writes()`: the caller vouches that running its writes twice changes nothing
# more than running them once (a send carrying its nonce).
_idempotent_writes: contextvars.ContextVar[bool] = contextvars.ContextVar("idempotent_writes", default=False)


# Set by `Pool._once` while it gives back a connection that ran one SELECT and nothing else: the
# release hook (`_reset_unless_read`) then has nothing to undo.
_released_after_read: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "released_after_read", default=False
)


@contextmanager
def idempotent_writes() -> Iterator[None]:
    """Inside this block the pool may retry a write whose connection failed mid-statement."""
    token = _idempotent_writes.set(True)
    try:
        yield
    finally:
        _idempotent_writes.reset(token)


def is_read(query: str) -> bool:
    """This project's reads start with SELECT; its writes with INSERT, UPDATE, DELETE or WITH. (A
    SELECT here changes nothing: it is retried after a broken connection, and the connection goes
    back to the pool without a reset.)"""
    return query.lstrip()[:6].upper() == "SELECT"


class Pool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no type information
    """asyncpg's pool, with the rules every service needs when the database restarts or goes away.

    `fetch`, `fetchrow`, `fetchval` and `execute` on the pool itself retry once after a connection
    failure when that is safe:
    - the statement never reached the server: any statement; after a short pause when connecting
      failed (refused, or the server was starting up), at once on a fresh connection when a
      pooled one was found closed before anything was sent;
    - the connection broke while the statement ran: only reads (`is_read`), and writes inside
      `idempotent_writes()`, since a write may have committed before the connection broke;
    - never after a timeout (the time is already spent; retrying would double it).
    What still fails propagates; the shared error handling answers any outage with a 503.
    Transactions (`acquire()` and `conn.transaction()`) are not retried: their callers decide.
    """

    def __init__(
        self, *args: Any, acquire_timeout: float, release_timeout: float, reads_only: bool, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout
        self.release_timeout = release_timeout
        self.reads_only = reads_only

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109  (asyncpg's signature)
        """Give a connection back; its reset is bounded by the statement timeout.

        A reset that fails or times out (the server stopped answering after the caller's last
        statement) drops the connection, and the pool replaces it on a later acquire. asyncpg
        raises that failure out of `async with pool.acquire()`, which answered a transaction that
        had committed as failed; what the caller's statements did stands instead.
        """
        try:
            await super().release(connection, timeout=self.release_timeout if timeout is None else timeout)
        except Exception as exc:
            if not is_outage(exc):
                raise
            logger.info("a connection failed its reset on release; dropped", extra={"error": repr(exc)})

    # Same signatures as asyncpg's (keyword options such as `timeout` pass through).
    async def fetch(self, query: str, *args: Any, **options: Any) -> Any:
        return await self._run(query, lambda conn: conn.fetch(query, *args, **options))

    async def fetchrow(self, query: str, *args: Any, **options: Any) -> Any:
        return await self._run(query, lambda conn: conn.fetchrow(query, *args, **options))

    async def fetchval(self, query: str, *args: Any, **options: Any) -> Any:
        return await self._run(query, lambda conn: conn.fetchval(query, *args, **options))

    async def execute(self, query: str, *args: Any, **options: Any) -> Any:
        return await self._run(query, lambda conn: conn.execute(query, *args, **options))

    async def _run(self, query: str, statement: Callable[[Any], Awaitable[T]]) -> T:
        read = is_read(query)
        if self.reads_only and not read:
            raise ReadsOnlyPoolError(query)
        try:
            return await self._once(statement, read=read)
        except _NotSent as failure:
            if isinstance(failure.cause, TimeoutError):
                raise failure.cause from None
            if failure.pause:
                await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
            cause = failure.cause
        except _Broken as failure:
            retry_safe = is_read(query) or _idempotent_writes.get()
            if isinstance(failure.cause, TimeoutError) or not retry_safe:
                raise failure.cause from None
            cause = failure.cause
        logger.info("retrying a statement after a connection failure", extra={"error": repr(cause)})
        try:
            return await self._once(statement, read=read)
        except (_NotSent, _Broken) as failure:
            raise failure.cause from None

    async def _once(self, statement: Callable[[Any], Awaitable[T]], *, read: bool) -> T:
        # A timeout on acquire costs a task per statement on Python 3.11 (asyncio.wait_for): only
        # paid when no pooled connection is free, the one case where the wait can be long (a free
        # one at most connects, which the connect timeout bounds).
        queue = getattr(self, "_queue", None)
        timeout = None if queue is not None and queue.qsize() > 0 else self.acquire_timeout
        try:
            conn = await self.acquire(timeout=timeout)
        except Exception as exc:
            if is_outage(exc):
                raise _NotSent(exc, pause=True) from exc
            raise
        try:
            return await statement(conn)
        except Exception as exc:
            if not is_outage(exc):
                raise
            if isinstance(exc, asyncpg.InternalClientError):
                # A connection caught reading the server's goodbye: it will never work again.
                conn.terminate()
                raise _NotSent(exc, pause=False) from exc
            if isinstance(exc, TimeoutError):
                # The server did not answer in time. asyncpg would keep the connection until a
                # cancel request got through (to a server that is not answering); dropping it frees
                # the pool slot now, so the queue behind it fails fast instead of piling up.
                conn.terminate()
            if type(exc) is asyncpg.InterfaceError:
                # "connection is closed": found dead before anything was sent.
                raise _NotSent(exc, pause=False) from exc
            raise _Broken(exc) from exc
        finally:
            # The statement's result is what counts: a connection that fails its reset on the way
            # back is dropped by the pool (which replaces it on a later acquire).
            released_after_read = _released_after_read.set(read)
            try:
                with suppress(Exception):
                    await self.release(conn)
            finally:
                _released_after_read.reset(released_after_read)


class ReadsOnlyPoolError(RuntimeError):
    """A statement other than a SELECT on a pool made with `reads_only=True` (a programming error:
    that service is meant to read only)."""

    def __init__(self, query: str) -> None:
        super().__init__(f"a pool made for reads only was given: {query.strip()[:80]!r}")


class _NotSent(Exception):
    """The statement never reached the server."""

    def __init__(self, cause: Exception, *, pause: bool) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.pause = pause


class _Broken(Exception):
    """The connection failed while the statement ran: it may or may not have taken effect."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(repr(cause))
        self.cause = cause


async def make_pool(
    url: str,
    *,
    size: int,
    application_name: str,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
    reads_only: bool = False,
) -> Pool:
    """A pool of at most `size` connections. min_size=0: it connects on first use, so a service
    starts (and answers its liveness check) before the database does.

    Every connection is opened with `plan_cache_mode = force_generic_plan`. Each statement is
    prepared once per connection (asyncpg's statement cache), and with a generic plan PostgreSQL
    plans it once instead of at every execution. The hot statements are short key and range
    lookups, whose custom plans cost more to make than to run (a newest-50 page: 0.15 ms planning
    against 0.12 ms executing). Their generic plans are checked beside their custom ones in
    `tests/test_private_chat_plans.py`.

    A connection goes back to the pool without asyncpg's reset query (`SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, one more round trip) when all it
    ran was one SELECT through the pool's own `fetch`, `fetchrow`, `fetchval` or `execute`: such a
    statement opens no transaction and sets no session state (this project's SELECTs call no
    session-level advisory lock or `set_config`). A connection taken with `acquire()`, or one that
    ran a write, is reset as asyncpg does by default, and asyncpg rolls back a transaction found
    open either way. Skipping the reset after writes as well was measured twice and left out:
    once at send 551 -> 1,038/s with a reliability run that counted one send acknowledged and
    not stored (a race in the reliability harness could count that, fixed since), and again
    within the noise of alternating runs (bench/results/README.md, "Issue 14, fifth run").

    `reads_only=True` is for a service whose every statement is one SELECT on the pool (the
    gateway's token check, the events service's reads): any other statement given to the pool's
    own methods raises `ReadsOnlyPoolError` before it is sent (a connection taken with `acquire()`
    is not checked).
    """
    pool = Pool(
        plain_database_url(url),
        min_size=0,
        max_size=size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        loop=None,
        acquire_timeout=connect_timeout + statement_timeout,
        release_timeout=statement_timeout,
        reads_only=reads_only,
        reset=_reset_unless_read,
        timeout=connect_timeout,
        command_timeout=statement_timeout,
        server_settings={"application_name": application_name, "plan_cache_mode": "force_generic_plan"},
    )
    await pool
    return pool


async def _reset_unless_read(connection: asyncpg.Connection) -> None:
    """The pool's release hook, after asyncpg's own clean-up (which rolls back a transaction left
    open): asyncpg's reset query, unless the connection ran one SELECT on the pool itself."""
    if not _released_after_read.get():
        await connection.execute(connection.get_reset_query())


async def close_pool(pool: asyncpg.Pool, within_seconds: float = 5.0) -> None:
    """Close a pool at shutdown without waiting forever: a graceful close waits for every
    connection to come back, and one a cancelled task still holds would keep the process from
    exiting; past `within_seconds` the rest are cut."""
    try:
        await asyncio.wait_for(pool.close(), within_seconds)
    except TimeoutError:
        logger.warning("database pool: connections in use %.0f s into the shutdown; cut", within_seconds)
        pool.terminate()


class Executor(Protocol):
    """An asyncpg pool, or one of its connections (inside a transaction): both run a statement."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: object) -> Any: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...
