"""The users service's side of registration (the auth service's saga calls it): the internal
create is idempotent for a retried id, the unique username decides a race, and delete undoes it.
nginx never routes these endpoints, so they are tested here, on the service itself."""

import asyncio
import itertools
import secrets

import asyncpg
import httpx

# Random per session, so runs against a kept TEST_DATABASE_URL do not collide.
_ids = itertools.count(10**13 + secrets.randbelow(10**6) * 10**4)


def new_name() -> str:
    return f"it_{secrets.token_hex(6)}"


async def profile_count(
    raw: asyncpg.Connection, *, user_id: int | None = None, username: str | None = None
) -> int:
    count: int = await raw.fetchval(
        "SELECT count(*) FROM users.users WHERE id = $1 OR username = $2", user_id, username
    )
    return count


async def test_create_is_idempotent_for_a_retried_id(
    client: httpx.AsyncClient, raw: asyncpg.Connection
) -> None:
    user_id, name = next(_ids), new_name()
    body = {"username": name, "description": "hi", "locale": "ru"}
    created = await client.put(f"/internal/users/{user_id}", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["id"] == user_id
    assert created.json()["username"] == name
    # The auth service retries after a lost answer: the same profile, not an error.
    retried = await client.put(f"/internal/users/{user_id}", json=body)
    assert retried.status_code == 200
    assert retried.json() == created.json()
    row = await raw.fetchrow("SELECT username, description, locale FROM users.users WHERE id = $1", user_id)
    assert dict(row) == {"username": name, "description": "hi", "locale": "ru"}


async def test_a_taken_username_changes_nothing(client: httpx.AsyncClient, raw: asyncpg.Connection) -> None:
    first, second, name = next(_ids), next(_ids), new_name()
    assert (await client.put(f"/internal/users/{first}", json={"username": name})).status_code == 201
    # Another id, the same name.
    taken = await client.put(f"/internal/users/{second}", json={"username": name})
    assert taken.status_code == 409, taken.text
    assert taken.json()["code"] == "username_taken"
    # The same id, another name: not a retry of the first call.
    renamed = await client.put(f"/internal/users/{first}", json={"username": new_name()})
    assert renamed.status_code == 409
    assert renamed.json()["code"] == "username_taken"
    assert await raw.fetchval("SELECT username FROM users.users WHERE id = $1", first) == name
    assert await profile_count(raw, user_id=second) == 0


async def test_racing_creates_of_one_username_make_one_profile(
    client: httpx.AsyncClient, raw: asyncpg.Connection
) -> None:
    name = new_name()
    ids = [next(_ids) for _ in range(12)]
    answers = await asyncio.gather(
        *(client.put(f"/internal/users/{i}", json={"username": name}) for i in ids)
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 11, [answer.text for answer in answers]
    [winner] = [i for i, answer in zip(ids, answers, strict=True) if answer.status_code == 201]
    assert await raw.fetch("SELECT id FROM users.users WHERE username = $1", name) == [(winner,)]


async def test_delete_undoes_a_create_and_may_be_retried(
    client: httpx.AsyncClient, raw: asyncpg.Connection
) -> None:
    user_id, name = next(_ids), new_name()
    assert (await client.put(f"/internal/users/{user_id}", json={"username": name})).status_code == 201
    for _ in range(2):
        assert (await client.delete(f"/internal/users/{user_id}")).status_code == 204
    assert await profile_count(raw, user_id=user_id, username=name) == 0
    # The name is free again.
    assert (await client.put(f"/internal/users/{next(_ids)}", json={"username": name})).status_code == 201


async def test_bad_create_calls_are_refused(client: httpx.AsyncClient, raw: asyncpg.Connection) -> None:
    user_id = next(_ids)
    for path, body in (
        (f"/internal/users/{user_id}", {}),
        (f"/internal/users/{user_id}", {"username": "a"}),
        (f"/internal/users/{user_id}", {"username": "no spaces allowed"}),
        (f"/internal/users/{user_id}", {"username": new_name(), "locale": "de"}),
        (f"/internal/users/{user_id}", {"username": new_name(), "avatar_url": "javascript:alert(1)"}),
        ("/internal/users/12a", {"username": new_name()}),
        ("/internal/users/١٢", {"username": new_name()}),
    ):
        refused = await client.put(path, json=body)
        assert refused.status_code == 422, (path, body, refused.text)
    assert await profile_count(raw, user_id=user_id) == 0
