"""The query plans of the private chat service's hot reads and its send, on a chat with many
messages.

The SQL checked is the service's own text (repository.py), run with EXPLAIN ANALYZE against the
real schema; the statements the routes send are explained as prepared statements, with both the
per-call (custom) plan and the cached (generic) plan. A page must be a bounded index range scan:
the scan stops after `limit` rows whatever the depth of the cursor, and no sort runs below the
LIMIT.
"""

import json
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from private_chat_service.repository import CHAT_LIST_SQL, PAGE_SQL, SEND_SQL

pytestmark = pytest.mark.usefixtures("stack")

BIG_CHAT_MESSAGES = 60_000
MY_CHATS = 2_000
STRANGERS_CHATS = 40_000
PROFILES = 20_000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def limit_subtree(plan: dict[str, Any]) -> dict[str, Any]:
    return next(node for node in nodes(plan) if node["Node Type"] == "Limit")


_built: dict[str, dict[str, int]] = {}


@pytest.fixture
async def big_chat(db: asyncpg.Connection) -> dict[str, int]:
    """A chat of two (synthetic) users with many messages, among thousands of other chats.

    Built once per test session (the tests only read it).
    """
    if "chat" in _built:
        return _built["chat"]
    base = 10**15 + secrets.randbelow(10**12) * 10**3
    low, high = base + 1, base + 2
    async with db.transaction():
        chat_id = await db.fetchval(
            "INSERT INTO private_chat.chats (user_low, user_high, starter_id)"
            " VALUES ($1, $2, $1) RETURNING id",
            low,
            high,
        )
        # The low user also has thousands of chats on both sides of the pair ordering.
        await db.execute(
            """
            INSERT INTO private_chat.chats (user_low, user_high, starter_id, last_activity_at)
            SELECT CASE WHEN g % 2 = 0 THEN $1::bigint - g ELSE $1::bigint END,
                   CASE WHEN g % 2 = 0 THEN $1::bigint ELSE $1::bigint + 10 + g END,
                   $1::bigint, now() - g * interval '1 minute'
            FROM generate_series(1, $2::int) AS g
            """,
            low,
            MY_CHATS,
        )
        # ...in a table that is mostly other people's chats.
        await db.execute(
            """
            INSERT INTO private_chat.chats (user_low, user_high, starter_id, last_activity_at)
            SELECT $1::bigint + 10 * g, $1::bigint + 10 * g + 1, $1::bigint + 10 * g,
                   now() - g * interval '1 second'
            FROM generate_series(1, $2::int) AS g
            """,
            base + 10**6,
            STRANGERS_CHATS,
        )
        await db.execute(
            """
            INSERT INTO private_chat.messages (chat_id, owner_id, text)
            SELECT $1::bigint, CASE WHEN g % 2 = 0 THEN $2::bigint ELSE $3::bigint END, 'message ' || g
            FROM generate_series(1, $4::int) AS g
            """,
            chat_id,
            low,
            high,
            BIG_CHAT_MESSAGES,
        )
        # ...and a users table of realistic size, so that the planner's choice for the author's
        # profile (a key look-up) does not depend on how many users earlier tests made.
        await db.execute(
            """
            INSERT INTO users.users (id, username)
            SELECT $1::bigint + g, 'plan' || $1::bigint || '_' || g FROM generate_series(1, $2::int) AS g
            """,
            base + 10**7,
            PROFILES,
        )
    await db.execute("ANALYZE users.users")
    await db.execute("ANALYZE private_chat.chats")
    await db.execute("ANALYZE private_chat.messages")
    bounds = await db.fetchrow(
        "SELECT min(id) AS first, max(id) AS last FROM private_chat.messages WHERE chat_id = $1", chat_id
    )
    _built["chat"] = {"chat_id": chat_id, "user": low, "first": bounds["first"], "last": bounds["last"]}
    return _built["chat"]


def assert_bounded_range_scan(plan: dict[str, Any], direction: str, limit: int) -> None:
    limited = limit_subtree(plan)
    below = list(nodes(limited))
    assert not [n for n in below if n["Node Type"] == "Sort"], "a sort below the LIMIT"
    assert not [n for n in below if n["Node Type"] == "Seq Scan"], "a sequential scan below the LIMIT"
    [scan] = [n for n in below if n.get("Relation Name") == "messages"]
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan")
    assert scan["Index Name"] == "messages_pkey"
    assert scan["Scan Direction"] == direction
    # The scan stopped at the page: it did not walk the chat's history.
    assert scan["Actual Rows"] == limit
    assert scan.get("Rows Removed by Filter", 0) == 0


def sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def explain_prepared(
    db: asyncpg.Connection, sql: str, *args: object, generic: bool = False
) -> dict[str, Any]:
    """EXPLAIN ANALYZE the statement as the service sends it (a prepared statement with $n
    parameters), with the plan PostgreSQL would cache for it (generic) or plan per call (custom).
    It runs inside a transaction that is rolled back, so a write is measured and then undone."""
    name = f"pc_plan_{secrets.token_hex(4)}"
    mode = "force_generic_plan" if generic else "force_custom_plan"
    arguments = ", ".join(sql_literal(value) for value in args)
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await db.execute(f"PREPARE {name} AS {sql}")
        raw = await db.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({arguments})")
    finally:
        await transaction.rollback()
    plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    return plan


def page_args(chat: dict[str, int], *, before: int | None = None, after: int | None = None) -> list[object]:
    """The page statement's parameters in the order the repository passes them."""
    return [chat["chat_id"], chat["user"], 50, 0, *(v for v in (before, after) if v is not None)]


async def test_newest_page_is_a_backward_range_scan(db: asyncpg.Connection, big_chat: dict[str, int]) -> None:
    plan = await explain_prepared(db, PAGE_SQL[(False, False)], *page_args(big_chat))
    assert_bounded_range_scan(plan, "Backward", 50)


async def test_deep_cursor_pages_are_range_scans(db: asyncpg.Connection, big_chat: dict[str, int]) -> None:
    deep = big_chat["first"] + 1_000  # near the very beginning of the history
    older = await explain_prepared(db, PAGE_SQL[(True, False)], *page_args(big_chat, before=deep))
    assert_bounded_range_scan(older, "Backward", 50)
    newer = await explain_prepared(db, PAGE_SQL[(False, True)], *page_args(big_chat, after=deep))
    assert_bounded_range_scan(newer, "Forward", 50)


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("cursor", [None, "before", "after", "between"])
async def test_member_page_statement_is_a_bounded_range_scan(
    db: asyncpg.Connection, big_chat: dict[str, int], cursor: str | None, generic: bool
) -> None:
    """The statement the messages route runs: the page, its owners and the member check at once."""
    deep = big_chat["first"] + 1_000
    before = (deep if cursor == "before" else deep + 500) if cursor in ("before", "between") else None
    after = deep if cursor in ("after", "between") else None
    sql = PAGE_SQL[(before is not None, after is not None)]
    plan = await explain_prepared(db, sql, *page_args(big_chat, before=before, after=after), generic=generic)
    direction = "Forward" if cursor in ("after", "between") else "Backward"
    assert_bounded_range_scan(plan, direction, 50)
    # The member check is one lookup by primary key, not a scan.
    chat_scans = [n for n in nodes(plan) if n.get("Relation Name") == "chats"]
    assert chat_scans
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in chat_scans)
    assert all(n["Actual Loops"] == 1 for n in chat_scans)


def modified_rows(plan: dict[str, Any], operation: str) -> int:
    [node] = [n for n in nodes(plan) if n["Node Type"] == "ModifyTable" and n["Operation"] == operation]
    rows: int = node["Actual Rows"]
    return rows


async def test_send_statement_touches_one_chat_row_and_inserts_one_message(
    db: asyncpg.Connection, big_chat: dict[str, int]
) -> None:
    """Run for real (EXPLAIN ANALYZE) inside a transaction that is rolled back."""
    args = (big_chat["chat_id"], big_chat["user"], "explained", big_chat["first"])
    count = "SELECT count(*) FROM private_chat.messages WHERE chat_id = $1"
    before = await db.fetchval(count, big_chat["chat_id"])
    for generic in (False, True):
        plan = await explain_prepared(db, SEND_SQL, *args, generic=generic)
        assert not [n for n in nodes(plan) if n["Node Type"] in ("Seq Scan", "Sort", "Bitmap Heap Scan")]
        scans = {(n.get("Relation Name"), n.get("Index Name")) for n in nodes(plan) if "Index Name" in n}
        # The chat by key, the reply by key, the author's profile (for the event) by key.
        assert scans == {("chats", "chats_pkey"), ("messages", "messages_pkey"), ("users", "users_pkey")}
        assert modified_rows(plan, "Update") == 1
        # Rows fed into each INSERT (its child), whether or not it returns them.
        inserts = [n for n in nodes(plan) if n.get("Operation") == "Insert"]
        assert {n["Relation Name"]: n["Plans"][0]["Actual Rows"] for n in inserts} == {
            "messages": 1,
            "outbox": 1,
        }
    # Measured, then rolled back: nothing stayed.
    assert await db.fetchval(count, big_chat["chat_id"]) == before


async def test_page_owners_come_from_one_join(db: asyncpg.Connection, big_chat: dict[str, int]) -> None:
    plan = await explain_prepared(db, PAGE_SQL[(False, False)], *page_args(big_chat))
    assert plan["Actual Loops"] == 1
    joins = [n for n in nodes(plan) if n["Node Type"] in ("Nested Loop", "Hash Join", "Merge Join")]
    assert joins, "owners are joined in the page query"
    assert any(n.get("Relation Name") == "users" for n in nodes(plan))


async def test_chat_list_merges_the_two_member_indexes(
    db: asyncpg.Connection, big_chat: dict[str, int]
) -> None:
    plan = await explain_prepared(db, CHAT_LIST_SQL, big_chat["user"], 20, 20, 0)
    below = list(nodes(limit_subtree(plan)))
    assert not [n for n in below if n["Node Type"] in ("Sort", "Seq Scan")]
    scans = {n.get("Index Name") for n in below if n.get("Relation Name") == "chats"}
    assert scans == {"chats_low_activity", "chats_high_activity"}
    assert any(n["Node Type"] == "Merge Append" for n in below)


async def test_member_chats_view_reads_only_the_members_index_entries(
    db: asyncpg.Connection, big_chat: dict[str, int]
) -> None:
    """The events service's READY reads this published view by user: both halves are index scans
    by member, and each newest message id is one index probe."""
    ready = "SELECT chat_id, companion_id, last_message_id FROM private_chat.member_chats WHERE user_id = $1"
    plan = await explain_prepared(db, ready, big_chat["user"])
    assert not [n for n in nodes(plan) if n["Node Type"] in ("Seq Scan", "Sort")]
    # user_low leads chats_low_activity and the pair key alike; user_high leads chats_high_activity.
    indexes = {n["Index Name"] for n in nodes(plan) if "Index Name" in n}
    assert "chats_high_activity" in indexes
    assert indexes & {"chats_low_activity", "chats_pair_key"}
    chat_rows = [n for n in nodes(plan) if n.get("Relation Name") == "chats"]
    assert sum(n["Actual Rows"] for n in chat_rows) == MY_CHATS + 1
    message_scans = [n for n in nodes(plan) if n.get("Relation Name") == "messages"]
    assert message_scans
    assert all(n.get("Index Name") == "messages_pkey" for n in message_scans)
