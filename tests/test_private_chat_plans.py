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

from common.access import IS_REVOKED_SQL, REVOKED_AMONG_SQL
from events_service.repository import READY_SQL
from private_chat_service.repository import (
    CHAT_INFO_SQL,
    CHAT_LIST_SQL,
    DELETE_SQL,
    EDIT_SQL,
    FIRST_OF_NONCE_SQL,
    MEMBER_MESSAGE_SQL,
    MEMBERS_SQL,
    MESSAGE_ACCESS_SQL,
    PAGE_SQL,
    PAIR_CHAT_SQL,
    PROFILE_EXISTS_SQL,
    SEND_SQL,
)

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


async def insert_chat(db: asyncpg.Connection, low: int, high: int, messages: int, *, both_write: bool) -> int:
    """A chat of `low` and `high` with `messages` messages (alternately theirs, or all `low`'s)."""
    chat_id: int = await db.fetchval(
        "INSERT INTO private_chat.chats (user_low, user_high, starter_id) VALUES ($1, $2, $1) RETURNING id",
        low,
        high,
    )
    await db.execute(
        """
        INSERT INTO private_chat.messages (chat_id, owner_id, text)
        SELECT $1::bigint, CASE WHEN $4::bool AND g % 2 = 1 THEN $3::bigint ELSE $2::bigint END,
               'message ' || g
        FROM generate_series(1, $5::int) AS g
        """,
        chat_id,
        low,
        high,
        both_write,
        messages,
    )
    return chat_id


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
        chat_id = await insert_chat(db, low, high, BIG_CHAT_MESSAGES, both_write=True)
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
    if isinstance(value, list):  # an array literal of the parameter's own type: '{"a","b"}'
        return sql_literal("{" + ",".join('"' + str(item) + '"' for item in value) + "}")
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
    """Rows fed into the one UPDATE or DELETE (its child), whether or not it returns them."""
    [node] = [n for n in nodes(plan) if n["Node Type"] == "ModifyTable" and n["Operation"] == operation]
    return fed(node)


def fed(node: dict[str, Any]) -> int:
    """Rows a ModifyTable node's input gave it (not its InitPlans or SubPlans)."""
    [child] = [n for n in node["Plans"] if n["Parent Relationship"] == "Outer"]
    rows: int = child["Actual Rows"]
    return rows


def index_scans(plan: dict[str, Any]) -> set[tuple[str | None, str | None]]:
    return {(n.get("Relation Name"), n.get("Index Name")) for n in nodes(plan) if "Index Name" in n}


def rows_inserted(plan: dict[str, Any]) -> dict[str, int]:
    """Rows fed into each INSERT (its child), whether or not it returns them."""
    inserts = [n for n in nodes(plan) if n.get("Operation") == "Insert"]
    return {n["Relation Name"]: fed(n) for n in inserts}


def assert_no_scans_of_tables(plan: dict[str, Any]) -> None:
    assert not [n for n in nodes(plan) if n["Node Type"] in ("Seq Scan", "Sort", "Bitmap Heap Scan")]


@pytest.mark.parametrize("nonce", [None, "plan-nonce"], ids=["plain", "nonce"])
async def test_send_statement_touches_one_chat_row_and_inserts_one_message(
    db: asyncpg.Connection, big_chat: dict[str, int], nonce: str | None
) -> None:
    """Run for real (EXPLAIN ANALYZE) inside a transaction that is rolled back."""
    args = (big_chat["chat_id"], big_chat["user"], "explained", big_chat["first"], nonce)
    count = "SELECT count(*) FROM private_chat.messages WHERE chat_id = $1"
    before = await db.fetchval(count, big_chat["chat_id"])
    for generic in (False, True):
        plan = await explain_prepared(db, SEND_SQL, *args, generic=generic)
        assert_no_scans_of_tables(plan)
        # The chat by key (locked, then updated), the reply by key, the author's profile (for the
        # event) by key.
        assert index_scans(plan) == {
            ("chats", "chats_pkey"),
            ("messages", "messages_pkey"),
            ("users", "users_pkey"),
        }
        assert modified_rows(plan, "Update") == 1
        expected = {"messages": 1, "outbox": 1, "send_nonces": 1 if nonce else 0}
        assert rows_inserted(plan) == expected
    # Measured, then rolled back: nothing stayed.
    assert await db.fetchval(count, big_chat["chat_id"]) == before


async def test_repeated_nonce_send_writes_nothing(db: asyncpg.Connection, big_chat: dict[str, int]) -> None:
    """A repeat inside the window: the nonce key decides, and neither the message, nor the chat's
    activity, nor the event is written. (The first send and the repeat are rolled back.)"""
    chat, user = big_chat["chat_id"], big_chat["user"]
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(SEND_SQL, chat, user, "first", None, "plan-repeat")
        for generic in (False, True):
            plan = await explain_prepared(
                db, SEND_SQL, chat, user, "again", None, "plan-repeat", generic=generic
            )
            assert_no_scans_of_tables(plan)
            # The nonce row is offered and conflicts; nothing reaches the other tables.
            assert rows_inserted(plan) == {"messages": 0, "outbox": 0, "send_nonces": 1}
            assert modified_rows(plan, "Update") == 0
    finally:
        await transaction.rollback()


async def test_one_message_is_two_key_lookups(db: asyncpg.Connection, big_chat: dict[str, int]) -> None:
    args = (big_chat["chat_id"], big_chat["user"], big_chat["first"] + 7)
    for generic in (False, True):
        plan = await explain_prepared(db, MEMBER_MESSAGE_SQL, *args, generic=generic)
        assert_no_scans_of_tables(plan)
        assert index_scans(plan) == {
            ("chats", "chats_pkey"),
            ("messages", "messages_pkey"),
            ("users", "users_pkey"),
        }
        [message] = [n for n in nodes(plan) if n.get("Relation Name") == "messages"]
        assert message["Actual Rows"] == 1


@pytest.mark.parametrize("statement", ["edit", "delete"])
async def test_edit_and_delete_change_one_row_by_key(
    db: asyncpg.Connection, big_chat: dict[str, int], statement: str
) -> None:
    """Run for real inside a transaction that is rolled back; the (synthetic) big chat's odd
    messages are the low user's own."""
    chat, user = big_chat["chat_id"], big_chat["user"]
    owned = await db.fetchval(
        "SELECT id FROM private_chat.messages WHERE chat_id = $1 AND owner_id = $2 ORDER BY id LIMIT 1",
        chat,
        user,
    )
    for generic in (False, True):
        if statement == "edit":
            plan = await explain_prepared(db, EDIT_SQL, chat, user, owned, "edited", generic=generic)
            assert modified_rows(plan, "Update") == 1
        else:
            plan = await explain_prepared(db, DELETE_SQL, chat, user, owned, generic=generic)
            assert modified_rows(plan, "Delete") == 1
        assert_no_scans_of_tables(plan)
        assert {scan for scan in index_scans(plan) if scan[0] != "users"} == {
            ("chats", "chats_pkey"),
            ("messages", "messages_pkey"),
        }
        assert rows_inserted(plan) == {"outbox": 1}
        # The chat row is locked once, before the change.
        [lock] = [n for n in nodes(plan) if n["Node Type"] == "LockRows"]
        assert lock["Actual Rows"] == 1
    assert (
        await db.fetchval(
            "SELECT text FROM private_chat.messages WHERE chat_id = $1 AND id = $2", chat, owned
        )
        is not None
    )


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_page_owners_come_from_one_join(
    db: asyncpg.Connection, big_chat: dict[str, int], generic: bool
) -> None:
    plan = await explain_prepared(db, PAGE_SQL[(False, False)], *page_args(big_chat), generic=generic)
    assert plan["Actual Loops"] == 1
    joins = [n for n in nodes(plan) if n["Node Type"] in ("Nested Loop", "Hash Join", "Merge Join")]
    assert joins, "owners are joined in the page query"
    assert any(n.get("Relation Name") == "users" for n in nodes(plan))


@pytest.fixture
async def newest_members_chat(db: asyncpg.Connection, big_chat: dict[str, int]) -> dict[str, int]:
    """A chat of the two newest users (the highest ids, above the 20,000 profiles of big_chat),
    with a few hundred messages. Built once per session."""
    if "newest" in _built:
        return _built["newest"]
    low = big_chat["user"] + 10**7 + PROFILES + 1
    high = low + 1
    async with db.transaction():
        await db.execute(
            "INSERT INTO users.users (id, username)"
            " VALUES ($1::bigint, 'plan_newest_' || $1::bigint), ($2::bigint, 'plan_newest_' || $2::bigint)",
            low,
            high,
        )
        chat_id = await insert_chat(db, low, high, 300, both_write=True)
    await db.execute("ANALYZE users.users")
    await db.execute("ANALYZE private_chat.messages")
    first = await db.fetchval("SELECT min(id) FROM private_chat.messages WHERE chat_id = $1", chat_id)
    _built["newest"] = {"chat_id": chat_id, "user": low, "first": first}
    return _built["newest"]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("cursor", [None, "before", "after"])
async def test_page_owners_are_two_profile_lookups_whatever_the_number_of_users(
    db: asyncpg.Connection, newest_members_chat: dict[str, int], cursor: str | None, generic: bool
) -> None:
    """A page's owners are the chat's two members, read by key: the users table is never walked.
    Joined per row, the cached plan (which cannot see LIMIT's value, and so expects thousands of
    rows) merged the page against users_pkey from its start up to the owners' ids, or hashed the
    whole table: every profile of every older user, read for each page."""
    chat = newest_members_chat
    before = chat["first"] + 200 if cursor == "before" else None
    after = chat["first"] + 10 if cursor == "after" else None
    sql = PAGE_SQL[(before is not None, after is not None)]
    plan = await explain_prepared(db, sql, *page_args(chat, before=before, after=after), generic=generic)
    page = [n for n in nodes(plan) if n.get("Relation Name") == "messages"]
    assert sum(n["Actual Rows"] for n in page) == 50
    profiles = [n for n in nodes(plan) if n.get("Relation Name") == "users"]
    assert profiles, "owners are joined in the page query"
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in profiles) == 2
    assert not [n for n in profiles if n["Node Type"] == "Seq Scan"]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_chat_list_merges_the_two_member_indexes(
    db: asyncpg.Connection, big_chat: dict[str, int], generic: bool
) -> None:
    plan = await explain_prepared(db, CHAT_LIST_SQL, big_chat["user"], 20, 20, 0, generic=generic)
    below = list(nodes(limit_subtree(plan)))
    assert not [n for n in below if n["Node Type"] in ("Sort", "Seq Scan")]
    scans = {n.get("Index Name") for n in below if n.get("Relation Name") == "chats"}
    assert scans == {"chats_low_activity", "chats_high_activity"}
    assert any(n["Node Type"] == "Merge Append" for n in below)


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_member_chats_view_reads_only_the_members_index_entries(
    db: asyncpg.Connection, big_chat: dict[str, int], generic: bool
) -> None:
    """The events service's READY reads this published view by user: both halves are index scans
    by member, and each newest message id is one index probe."""
    ready = "SELECT chat_id, companion_id, last_message_id FROM private_chat.member_chats WHERE user_id = $1"
    plan = await explain_prepared(db, ready, big_chat["user"], generic=generic)
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


def key_lookups(chat: dict[str, int]) -> dict[str, tuple[str, list[object]]]:
    """The services' other statements, each a lookup by key, with arguments from the big chat."""
    user, companion = chat["user"], chat["user"] + 1
    return {
        "chat info": (CHAT_INFO_SQL, [chat["chat_id"]]),
        "pair chat": (PAIR_CHAT_SQL, [user, companion]),
        "members": (MEMBERS_SQL, [chat["chat_id"]]),
        "message access": (MESSAGE_ACCESS_SQL, [chat["chat_id"], chat["first"] + 10]),
        "profile exists": (PROFILE_EXISTS_SQL, [user]),
        "first of nonce": (FIRST_OF_NONCE_SQL, [chat["chat_id"], user, "no-such-nonce"]),
        "token check": (IS_REVOKED_SQL, ["no-such-jti", user, 1.0]),
        "token checks of one turn": (
            REVOKED_AMONG_SQL,
            [["no-such-jti", "another"], [user, companion], [1.0, 1.0]],
        ),
        "READY": (READY_SQL, [user]),
    }


@pytest.mark.parametrize(
    "statement",
    ["chat info", "pair chat", "members", "message access", "profile exists", "first of nonce",
     "token check", "token checks of one turn", "READY"],
)  # fmt: skip
async def test_key_lookups_keep_their_indexes_in_the_cached_plan(
    db: asyncpg.Connection, big_chat: dict[str, int], statement: str
) -> None:
    """Every pool opens its connections with plan_cache_mode = force_generic_plan (common.db): the
    plan PostgreSQL caches for each statement is the one every execution runs. The generic plan of
    each key lookup reads the same tables as the per-call plan, never the chats or messages table
    whole, and a table whole only where the per-call plan does too."""
    sql, args = key_lookups(big_chat)[statement]
    custom = await explain_prepared(db, sql, *args)
    generic = await explain_prepared(db, sql, *args, generic=True)

    def read(plan: dict[str, Any], *, whole: bool = False) -> set[str]:
        return {
            node["Relation Name"]
            for node in nodes(plan)
            if "Relation Name" in node and (node["Node Type"] == "Seq Scan" or not whole)
        }

    assert read(generic) == read(custom)
    assert not read(generic, whole=True) & {"chats", "messages"}
    assert read(generic, whole=True) <= read(custom, whole=True)


MOSTLY_DELETED_MESSAGES = 20_000


@pytest.fixture
async def mostly_deleted_chat(db: asyncpg.Connection, big_chat: dict[str, int]) -> dict[str, int]:
    """A chat whose newest 10,000 messages were 90% deleted (and the table vacuumed, as autovacuum
    would), plus its very newest 200 deleted outright. Built once per session."""
    if "deleted" in _built:
        return _built["deleted"]
    low, high = big_chat["user"] + 3, big_chat["user"] + 4
    async with db.transaction():
        chat_id = await insert_chat(db, low, high, MOSTLY_DELETED_MESSAGES, both_write=False)
        ids = await db.fetchrow(
            "SELECT min(id) AS first, max(id) AS last FROM private_chat.messages WHERE chat_id = $1", chat_id
        )
        recent = ids["last"] - 10_000
        await db.execute(
            """
            DELETE FROM private_chat.messages
            WHERE chat_id = $1 AND id > $2 AND (id % 10 <> 0 OR id > $3 - 200)
            """,
            chat_id,
            recent,
            ids["last"],
        )
    await db.execute("VACUUM (ANALYZE) private_chat.messages")
    survivors = await db.fetch(
        "SELECT id FROM private_chat.messages WHERE chat_id = $1 AND id > $2 ORDER BY id", chat_id, recent
    )
    _built["deleted"] = {
        "chat_id": chat_id,
        "user": low,
        "first": ids["first"],
        "recent": recent,
        "newest_alive": survivors[-1]["id"],
        "alive_recent": len(survivors),
    }
    return _built["deleted"]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("cursor", [None, "before", "after"])
async def test_pages_stay_range_scans_when_most_recent_messages_were_deleted(
    db: asyncpg.Connection, mostly_deleted_chat: dict[str, int], cursor: str | None, generic: bool
) -> None:
    """A deleted message's row is deleted: a page of a chat whose recent history is mostly deleted
    reads its `limit` rows from a few index pages, like any other page."""
    chat = mostly_deleted_chat
    before = chat["newest_alive"] if cursor == "before" else None
    after = chat["recent"] + 1_000 if cursor == "after" else None
    sql = PAGE_SQL[(before is not None, after is not None)]
    plan = await explain_prepared(db, sql, *page_args(chat, before=before, after=after), generic=generic)
    assert_bounded_range_scan(plan, "Forward" if cursor == "after" else "Backward", 50)
    [scan] = [n for n in nodes(plan) if n.get("Relation Name") == "messages"]
    # 50 entries of the 10%-alive stretch sit on a handful of leaf pages; without deletes a page
    # reads about 5 (see README). Walking the deleted ones would be hundreds.
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] < 40


async def test_member_chats_view_names_the_newest_message_left(
    db: asyncpg.Connection, mostly_deleted_chat: dict[str, int]
) -> None:
    chat = mostly_deleted_chat
    ready = "SELECT last_message_id FROM private_chat.member_chats WHERE user_id = $1 AND chat_id = $2"
    assert await db.fetchval(ready, chat["user"], chat["chat_id"]) == chat["newest_alive"]
    plan = await explain_prepared(db, ready, chat["user"], chat["chat_id"])
    message_scans = [n for n in nodes(plan) if n.get("Relation Name") == "messages"]
    assert message_scans
    assert all(n.get("Index Name") == "messages_pkey" for n in message_scans)
