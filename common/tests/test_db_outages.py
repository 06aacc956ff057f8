"""The shared database pool against a real PostgreSQL that restarts, stops, freezes or cuts a
connection mid-statement: reads are retried, writes only when provably safe, and nothing waits
past the timeouts."""

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.exceptions
import sqlalchemy.exc

from common.db import Pool, ReadsOnlyPoolError, idempotent_writes, is_read, make_pool
from common.outages import is_outage
from devstack.postgres import PrivatePostgres

CONNECT_TIMEOUT = 1.0
STATEMENT_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="db-outages-"))
    root.chmod(0o755)
    server = PrivatePostgres(root / "postgres", for_tests=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def pool(postgres: PrivatePostgres) -> AsyncIterator[Pool]:
    pool = await make_pool(
        postgres.url,
        size=4,
        application_name="outage_tests",
        connect_timeout=CONNECT_TIMEOUT,
        statement_timeout=STATEMENT_TIMEOUT,
    )
    await pool.execute("CREATE TABLE IF NOT EXISTS writes (id bigint GENERATED ALWAYS AS IDENTITY, tag text)")
    yield pool
    pool.terminate()


async def _admin(postgres: PrivatePostgres) -> asyncpg.Connection:
    return await asyncpg.connect(postgres.url)


async def _terminate_when_active(postgres: PrivatePostgres, marker: str) -> None:
    """Cut the pool's connection while it runs the statement carrying `marker`."""
    admin = await _admin(postgres)
    try:
        for _ in range(200):
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity"
                " WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}%",
            )
            if pid is not None:
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no active statement with {marker}")
    finally:
        await admin.close()


async def _count(postgres: PrivatePostgres, tag: str) -> int:
    admin = await _admin(postgres)
    try:
        return int(await admin.fetchval("SELECT count(*) FROM writes WHERE tag = $1", tag))
    finally:
        await admin.close()


async def test_pooled_connections_dead_after_a_restart_are_replaced(
    pool: Pool, postgres: PrivatePostgres
) -> None:
    # Fill the pool, then restart while this event loop is blocked: every pooled connection is
    # dead, and the pool cannot have noticed (the race a busy service meets).
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(4)))
    assert pool.get_size() == 4
    postgres.restart()
    # Each read meets a dead connection first, and answers anyway.
    answers = await asyncio.gather(*(pool.fetchval("SELECT $1::int", n) for n in range(4)))
    assert answers == [0, 1, 2, 3]


async def test_a_write_on_a_connection_that_died_unnoticed_is_refused_not_guessed(
    pool: Pool, postgres: PrivatePostgres
) -> None:
    """The server's "terminating connection" reaches the client only when it reads, after sending:
    the same answer as a statement cut while it ran, so a plain write is not repeated (503 for the
    client); the pool is whole again for the next one, and an idempotent write is repeated."""
    await pool.fetchval("SELECT 1")
    postgres.restart()  # the loop is blocked: the pooled connection is dead but not known to be
    with pytest.raises(asyncpg.PostgresError) as failure:
        await pool.execute("INSERT INTO writes (tag) VALUES ('unnoticed')")
    assert is_outage(failure.value)
    assert await _count(postgres, "unnoticed") == 0
    await pool.execute("INSERT INTO writes (tag) VALUES ('unnoticed')")
    assert await _count(postgres, "unnoticed") == 1

    await pool.fetchval("SELECT 1")
    postgres.restart()
    with idempotent_writes():
        await pool.execute("INSERT INTO writes (tag) VALUES ('unnoticed-idempotent')")
    assert await _count(postgres, "unnoticed-idempotent") == 1


async def test_a_read_cut_mid_statement_is_retried(pool: Pool, postgres: PrivatePostgres) -> None:
    cut = asyncio.create_task(_terminate_when_active(postgres, "read-cut-marker"))
    value = await pool.fetchval("SELECT 7 FROM pg_sleep(0.5) /* read-cut-marker */")
    await cut
    assert value == 7


async def test_a_write_cut_mid_statement_is_not_retried(pool: Pool, postgres: PrivatePostgres) -> None:
    cut = asyncio.create_task(_terminate_when_active(postgres, "write-cut-marker"))
    with pytest.raises(asyncpg.PostgresError) as failure:
        await pool.execute(
            "INSERT INTO writes (tag) SELECT 'write-cut' FROM pg_sleep(0.5) /* write-cut-marker */"
        )
    await cut
    assert is_outage(failure.value)
    # The cut rolled the statement back, and nothing ran it again.
    assert await _count(postgres, "write-cut") == 0


async def test_an_idempotent_write_cut_mid_statement_is_retried(
    pool: Pool, postgres: PrivatePostgres
) -> None:
    cut = asyncio.create_task(_terminate_when_active(postgres, "idem-cut-marker"))
    with idempotent_writes():
        await pool.execute(
            "INSERT INTO writes (tag) SELECT 'idem-cut' FROM pg_sleep(0.5) /* idem-cut-marker */"
        )
    await cut
    assert await _count(postgres, "idem-cut") == 1


async def test_a_stopped_server_fails_fast_as_an_outage_and_is_used_again_once_back(
    pool: Pool, postgres: PrivatePostgres
) -> None:
    await pool.fetchval("SELECT 1")
    postgres.stop()
    try:
        started = time.monotonic()
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)) as failure:
            await pool.fetchval("SELECT 1")
        assert is_outage(failure.value), repr(failure.value)
        # One retry after a short pause; no timeout is waited out on a refused connection.
        assert time.monotonic() - started < CONNECT_TIMEOUT + 1.0
    finally:
        await asyncio.to_thread(postgres.start)  # start() runs its own event loop
    assert await pool.fetchval("SELECT 2") == 2


async def test_a_frozen_server_times_out_within_the_bounds(pool: Pool, postgres: PrivatePostgres) -> None:
    """SIGSTOP on every PostgreSQL process: connections stay open but nothing answers, as when the
    network between the service and the database drops packets."""
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(2)))
    postgres.freeze()
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(pool.fetchval("SELECT $1::int", n) for n in range(8)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
    finally:
        postgres.thaw()
    assert all(isinstance(result, Exception) and is_outage(result) for result in results), results
    # Waiting for a connection, connecting and the statement are each bounded; nothing retries a
    # timeout, so no caller waits past acquire + statement time.
    assert elapsed < CONNECT_TIMEOUT + 2 * STATEMENT_TIMEOUT + 1.5, elapsed
    # The connections that timed out were dropped; fresh ones answer at once.
    assert await pool.fetchval("SELECT 3") == 3


async def test_a_transaction_committed_before_a_freeze_is_not_failed_by_the_reset(
    pool: Pool, postgres: PrivatePostgres
) -> None:
    """A transaction committed, then the server stopped answering before its connection went back
    to the pool: the reset on release times out after the statement timeout. asyncpg raises that
    out of the `async with pool.acquire()` block, which answered a committed write as failed; the
    connection is dropped instead, and the block ends as its statements did."""
    tag = f"reset-{time.monotonic_ns()}"
    frozen = False
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("INSERT INTO writes (tag) VALUES ($1)", tag)
            postgres.freeze()
            frozen = True
            started = time.monotonic()
        elapsed = time.monotonic() - started
    finally:
        if frozen:
            postgres.thaw()
    assert elapsed < STATEMENT_TIMEOUT + 1.0, elapsed
    assert await _count(postgres, tag) == 1
    assert await pool.fetchval("SELECT 4") == 4


def test_reads_are_the_statements_that_start_with_select() -> None:
    assert is_read("\n    SELECT id FROM private_chat.chats")
    assert is_read("select 1")
    assert not is_read("WITH touched AS (UPDATE x SET y = 1 RETURNING id) SELECT id FROM touched")
    assert not is_read("INSERT INTO writes (tag) VALUES ('x')")
    assert not is_read("DELETE FROM writes")


def test_outages_are_told_from_other_failures() -> None:
    assert is_outage(ConnectionRefusedError(111, "refused"))
    assert is_outage(TimeoutError())
    assert is_outage(OSError("Multiple exceptions: [Errno 111] Connect call failed"))
    assert is_outage(asyncpg.InterfaceError("cannot perform operation: connection is closed"))
    assert is_outage(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert is_outage(redis.exceptions.ConnectionError("Error 111 connecting"))
    wrapped = sqlalchemy.exc.DBAPIError("SELECT 1", None, Exception("boom"), connection_invalidated=True)
    assert is_outage(wrapped)
    chained = RuntimeError("while relaying")
    chained.__cause__ = ConnectionResetError()
    assert is_outage(chained)

    assert not is_outage(FileNotFoundError(2, "No such file"))
    assert not is_outage(asyncpg.UniqueViolationError("duplicate key"))
    assert not is_outage(asyncpg.DataError("invalid input for query argument"))
    assert not is_outage(sqlalchemy.exc.DBAPIError("SELECT 1", None, Exception("syntax")))
    assert not is_outage(ValueError("bad"))


async def test_only_a_connection_that_ran_one_select_goes_back_without_a_reset(
    pool: Pool, postgres: PrivatePostgres
) -> None:
    """A SELECT on the pool itself is one statement on the server; a write on the pool, or a
    connection taken with acquire(), is followed by asyncpg's reset query. A transaction left open
    is rolled back either way. A reads-only pool refuses anything but a SELECT before sending it,
    and every pool plans with cached generic plans (`pool` makes the table)."""
    probe = await make_pool(postgres.url, size=1, application_name="reset_probe")
    reading = await make_pool(postgres.url, size=1, application_name="reads_only_probe", reads_only=True)
    admin = await _admin(postgres)

    async def last_statement() -> str:
        query = "SELECT query FROM pg_stat_activity WHERE application_name = 'reset_probe'"
        return str(await admin.fetchval(query))

    try:
        assert await probe.fetchval("SELECT 41 + 1 AS reset_probe") == 42
        assert await last_statement() == "SELECT 41 + 1 AS reset_probe"
        tag = f"reset-after-write-{time.monotonic_ns()}"
        await probe.execute("INSERT INTO writes (tag) VALUES ($1)", tag)
        assert "RESET ALL" in await last_statement()
        assert await probe.fetchval("SELECT 43 AS reset_probe") == 43
        assert await last_statement() == "SELECT 43 AS reset_probe"
        async with probe.acquire() as connection:
            await connection.fetchval("SELECT 44")
        assert "RESET ALL" in await last_statement()
        connection = await probe.acquire()
        await connection.execute("BEGIN")
        await probe.release(connection)
        async with probe.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SHOW plan_cache_mode") == "force_generic_plan"

        refused = f"reads-only-{time.monotonic_ns()}"
        assert await reading.fetchval("SELECT 1") == 1
        with pytest.raises(ReadsOnlyPoolError):
            await reading.execute("INSERT INTO writes (tag) VALUES ($1)", refused)
        assert await _count(postgres, refused) == 0
    finally:
        await admin.close()
        probe.terminate()
        reading.terminate()
