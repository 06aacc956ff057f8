"""Username search and "my profile", through nginx; the search plan on 100k users."""

import json
import uuid

import asyncpg
import httpx
import pytest
import trusted

from users_service.repository import SEARCH_SQL, prefix_bounds

# Ids far above anything the auth service allocates, for rows this module writes directly.
FAR_ID = 10**15


def fresh_prefix() -> str:
    return "s" + uuid.uuid4().hex[:10]


async def insert_users(db: asyncpg.Connection, usernames: list[str]) -> None:
    base = FAR_ID + uuid.uuid4().int % 10**12
    await db.executemany(
        "INSERT INTO users.users (id, username) VALUES ($1, $2)",
        [(base + index, name) for index, name in enumerate(usernames)],
    )


async def search(api: httpx.AsyncClient, headers: dict[str, str], **params: object) -> httpx.Response:
    return await api.get("/users/user/", params=params, headers=headers)


async def test_exact_match_first_then_by_username(api, make_user, db) -> None:
    caller = await make_user()
    prefix = fresh_prefix()
    names = [prefix + "a", prefix + "_x", prefix, prefix + ".b", prefix + "0", prefix + "zz"]
    # Inserted in an order unrelated to the expected one; the exact match is a real sign-up.
    await insert_users(db, [n for n in names if n != prefix])
    exact = await make_user(prefix.upper())
    assert exact.username == prefix

    response = await search(api, caller.headers, username=prefix.upper())
    assert response.status_code == 200, response.text
    found = [user["username"] for user in response.json()]
    assert found == [prefix, prefix + ".b", prefix + "0", prefix + "_x", prefix + "a", prefix + "zz"]
    assert response.json()[0] == {"id": exact.id, "username": prefix, "avatar_url": None}
    assert set(response.json()[0]) == {"id", "username", "avatar_url"}

    # A longer prefix narrows it; the exact match of that one comes first too.
    longer = await search(api, caller.headers, username=prefix + "A")
    assert [u["username"] for u in longer.json()] == [prefix + "a"]


async def test_exact_match_is_first_even_when_limited(api, make_user, db) -> None:
    caller = await make_user()
    prefix = fresh_prefix()
    await insert_users(db, [prefix + suffix for suffix in ("x", "y", "z", "")])
    response = await search(api, caller.headers, username=prefix, limit=1)
    assert [u["username"] for u in response.json()] == [prefix]


async def test_percent_and_underscore_are_literal(api, make_user, db) -> None:
    caller = await make_user()
    prefix = fresh_prefix()
    await insert_users(db, [prefix + "_1", prefix + "x1", prefix + "1q"])
    underscore = await search(api, caller.headers, username=prefix + "_")
    assert [u["username"] for u in underscore.json()] == [prefix + "_1"]
    for query in (prefix + "%", "%", "_%", prefix[:3] + "%1", "%" + prefix[1:]):
        response = await search(api, caller.headers, username=query)
        assert response.status_code == 200
        assert response.json() == [], query


async def test_limit_default_and_bounds(api, make_user, db) -> None:
    caller = await make_user()
    prefix = fresh_prefix()
    await insert_users(db, [f"{prefix}{index:03d}" for index in range(105)])

    default = await search(api, caller.headers, username=prefix)
    assert [u["username"] for u in default.json()] == [f"{prefix}{i:03d}" for i in range(25)]
    most = await search(api, caller.headers, username=prefix, limit=100)
    assert len(most.json()) == 100
    assert len((await search(api, caller.headers, username=prefix, limit=3)).json()) == 3
    for bad in (0, -1, 101, "x"):
        response = await search(api, caller.headers, username=prefix, limit=bad)
        assert response.status_code == 422, bad


async def test_no_match_and_bad_queries(api, make_user) -> None:
    caller = await make_user()
    none = await search(api, caller.headers, username=fresh_prefix())
    assert (none.status_code, none.json()) == (200, [])
    # Characters a username cannot hold match nothing (and never reach SQL as a pattern).
    for query in ("ü", "a b", "' OR 1=1 --", "\\", "   "):
        response = await search(api, caller.headers, username=query)
        assert (response.status_code, response.json()) == (200, []), query
    assert (await search(api, caller.headers)).status_code == 422
    assert (await search(api, caller.headers, username="")).status_code == 422
    assert (await search(api, caller.headers, username="a" * 33)).status_code == 422


async def test_search_needs_a_token(api, make_user) -> None:
    user = await make_user()
    response = await api.get("/users/user/", params={"username": user.username})
    assert response.status_code == 401
    assert "detail" in response.json()
    forged = await api.get(
        "/users/user/", params={"username": user.username}, headers={"X-User-Id": str(user.id)}
    )
    assert forged.status_code == 401


async def test_my_profile(api, make_user, db) -> None:
    user = await make_user()
    response = await api.get("/users/me/", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("id", "username", "avatar_url", "description", "status")} == {
        "id": user.id,
        "username": user.username,
        "avatar_url": None,
        "description": "",
        "status": "",
    }
    assert body["created_at"].endswith(("Z", "+00:00"))
    # The published contract other services read holds the same user object.
    row = await db.fetchrow("SELECT * FROM users.public_profiles WHERE id = $1", user.id)
    assert dict(row) == {"id": user.id, "username": user.username, "avatar_url": None}

    assert (await api.get("/users/me/")).status_code == 401
    assert (await api.get("/users/me/", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_profile_allows_an_external_avatar_url(api, make_user, db) -> None:
    """Yandex ID users start with the Yandex picture: an external URL and no stored key."""
    user = await make_user()
    external = "https://avatars.yandex.net/get-yapic/12345/islands-200"
    await db.execute("UPDATE users.users SET avatar_url = $1 WHERE id = $2", external, user.id)
    me = await api.get("/users/me/", headers=user.headers)
    assert me.json()["avatar_url"] == external
    found = await search(api, user.headers, username=user.username)
    assert found.json()[0]["avatar_url"] == external


def _plan_nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    nodes = [plan]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        nodes.extend(_plan_nodes(child))
    return nodes


async def test_prefix_search_uses_the_index_on_100k_users(db) -> None:
    """EXPLAIN of the service's own query on 100k users: an index range scan on
    users_username_prefix, no table scan and no sort, for custom and generic plans alike.
    The rows are inserted in a transaction that is rolled back."""
    sql = SEARCH_SQL.text.replace(":low", "$1").replace(":high", "$2").replace(":limit", "$3")
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(
            """
            INSERT INTO users.users (id, username)
            SELECT $1::bigint + g, 'p' || substr(md5(g::text), 1, 11)
            FROM generate_series(1, 100000) AS g
            """,
            FAR_ID + 5 * 10**12,
        )
        await db.execute("ANALYZE users.users")
        assert await db.fetchval("SELECT count(*) >= 100000 FROM users.users")
        low, high = prefix_bounds("pab")
        plans = {}
        for mode in ("force_custom_plan", "force_generic_plan"):
            # PREPARE + EXECUTE, as the service's driver runs it: a generic plan sees only $1..$3.
            await db.execute(f"SET LOCAL plan_cache_mode = {mode}")
            await db.execute(f"PREPARE search_{mode}(text, text, int) AS {sql}")
            explained = await db.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE search_{mode}('{low}', '{high}', 25)"
            )
            await db.execute(f"DEALLOCATE search_{mode}")
            plans[mode] = json.loads(explained)[0]
        assert "$1" in json.dumps(plans["force_generic_plan"])
        for mode, plan in plans.items():
            nodes = _plan_nodes(plan["Plan"])
            types = [node["Node Type"] for node in nodes]
            assert "Seq Scan" not in types, (mode, types)
            assert "Sort" not in types, (mode, types)
            scans = [node for node in nodes if node["Node Type"] in ("Index Scan", "Index Only Scan")]
            assert [scan["Index Name"] for scan in scans] == ["users_username_prefix"], (mode, types)
            assert "~>=~" in scans[0]["Index Cond"], scans[0]
            # The scan reads only the matching range (~100000/256 rows), stopping at LIMIT.
            assert nodes[0]["Actual Rows"] == 25
            assert scans[0]["Actual Rows"] <= 25
    finally:
        await transaction.rollback()


@pytest.mark.parametrize("prefix", ["a", "az", "a.", "9", "_"])
def test_prefix_bounds_hold_exactly_the_prefixed_strings(prefix: str) -> None:
    low, high = prefix_bounds(prefix)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_."
    for suffix in ("", *alphabet, "zz", "..", "__"):
        name = prefix + suffix
        assert low.encode() <= name.encode() < high.encode()
    for other in alphabet:
        name = other + "x"
        inside = low.encode() <= name.encode() < high.encode()
        assert inside == name.startswith(prefix)


async def test_internal_create_accepts_only_web_avatar_urls(stack, api, make_user) -> None:
    """The auth service hands over a Yandex ID user's picture as an absolute http(s) URL."""
    caller = await make_user()
    internal = f"http://127.0.0.1:{stack.config.service_ports['users']}/internal/users"
    user_id = FAR_ID + uuid.uuid4().int % 10**12
    name = fresh_prefix()
    async with trusted.internal_client(timeout=30) as direct:
        for bad in ("javascript:alert(1)", "/relative.png", "ftp://example.com/a.png"):
            refused = await direct.put(f"{internal}/{user_id}", json={"username": name, "avatar_url": bad})
            assert refused.status_code == 422, bad
        external = "https://avatars.yandex.net/get-yapic/31804/islands-200"
        created = await direct.put(f"{internal}/{user_id}", json={"username": name, "avatar_url": external})
        assert created.status_code == 201, created.text
    found = await search(api, caller.headers, username=name)
    assert found.json() == [{"id": user_id, "username": name, "avatar_url": external}]
