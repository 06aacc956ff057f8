"""Yandex ID through nginx: the sign-up link, registration and log-in with a Yandex OAuth token.

The stack's auth service asks the fake Yandex ID server (`fake_yandex` fixture) for profiles.
"""

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from polite_client import post_retrying

REGISTER = "/auth/yandex_oauth_register/"
LOGIN = "/auth/yandex_oauth_login/"
AVATAR_ID = "31804/BYkogAC6AoB17bN1HKRFAyKiM4-1"
_ids = itertools.count(1)


def new_token() -> str:
    return f"y0_{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def new_yandex_id(last4: str | None = None) -> str:
    """A fresh Yandex uid (digits), optionally ending in the given four digits."""
    head = f"{next(_ids):03d}{uuid.uuid4().int % 10**5:05d}"
    return f"1{head}{last4 if last4 is not None else f'{uuid.uuid4().int % 10**4:04d}'}"


def new_login(prefix: str = "yu") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


post = post_retrying


async def register(api: httpx.AsyncClient, token: str, **kwargs: Any) -> httpx.Response:
    return await post(api, REGISTER, params={"oauth_token": token}, **kwargs)


async def login(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await post(api, LOGIN, params={"oauth_token": token})


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    credentials = await db.fetchval("SELECT count(*) FROM auth.credentials")
    users = await db.fetchval("SELECT count(*) FROM users.users")
    return int(credentials), int(users)


async def account(db: asyncpg.Connection, yandex_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(
        "SELECT c.user_id, c.email, c.password_hash, c.state, u.username, u.avatar_url, u.locale"
        " FROM auth.credentials c LEFT JOIN users.users u ON u.id = c.user_id WHERE c.yandex_id = $1",
        yandex_id,
    )
    return dict(row) if row else None


async def test_sign_up_link(api: httpx.AsyncClient, fake_yandex: Any) -> None:
    response = await api.get("/auth/yandex_oauth_url/")
    assert response.status_code == 200, response.text
    url = urlsplit(response.json()["yandex_url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "oauth.yandex.ru", "/authorize")
    assert parse_qs(url.query) == {
        "response_type": ["token"],
        "client_id": [fake_yandex.client_id],
        "redirect_uri": [fake_yandex.redirect_uri],
    }

    with_state = await api.get("/auth/yandex_oauth_url/", params={"state": "s-1.2_3~"})
    assert with_state.status_code == 200
    assert parse_qs(urlsplit(with_state.json()["yandex_url"]).query)["state"] == ["s-1.2_3~"]

    bad_state = await api.get("/auth/yandex_oauth_url/", params={"state": "a b&c=d"})
    assert bad_state.status_code == 422


async def test_register_then_log_in(api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any) -> None:
    token, yandex_id, name = new_token(), new_yandex_id(), new_login("Ivan.")
    fake_yandex.profile(
        token,
        id=yandex_id,
        login=name,
        default_email=f"{name}@Yandex.RU",
        default_avatar_id=AVATAR_ID,
        is_avatar_empty=False,
    )

    registered = await register(api, token, headers={"Accept-Language": "ru"})
    assert registered.status_code == 200, registered.text
    assert registered.json() == {"detail": "success"}
    assert ("/info?format=json", f"OAuth {token}") in fake_yandex.requests

    row = await account(db, yandex_id)
    assert row is not None
    assert row["state"] == "active"
    assert row["password_hash"] is None
    assert row["email"] == f"{name.lower()}@yandex.ru"
    assert row["username"] == name.lower()
    assert row["avatar_url"] == f"https://avatars.yandex.net/get-yapic/{AVATAR_ID}/islands-200"
    assert row["locale"] == "ru"

    logged_in = await login(api, token)
    assert logged_in.status_code == 200, logged_in.text
    body = logged_in.json()
    assert body["type"] == "Bearer"
    headers = {"Authorization": f"Bearer {body['token']}"}
    me = await api.get("/users/me/", headers=headers)
    assert me.status_code == 200, me.text
    assert (me.json()["id"], me.json()["username"]) == (row["user_id"], name.lower())
    assert me.json()["avatar_url"] == row["avatar_url"]
    checked = await api.get("/gateway/get-token/", headers=headers)
    assert checked.status_code == 200
    assert checked.json()["user_id"] == row["user_id"]

    # Log-in goes by the Yandex id, not the token: a new token of the same person works too.
    other_token = new_token()
    fake_yandex.profile(other_token, id=yandex_id, login=name, default_email="changed@yandex.ru")
    again = await login(api, other_token)
    assert again.status_code == 200, again.text
    me_again = await api.get("/users/me/", headers={"Authorization": f"Bearer {again.json()['token']}"})
    assert me_again.json()["id"] == row["user_id"]


async def test_yandex_account_cannot_log_in_with_a_password(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    token, yandex_id, name = new_token(), new_yandex_id(), new_login()
    email = f"{name}@yandex.ru"
    fake_yandex.profile(token, id=yandex_id, login=name, default_email=email)
    assert (await register(api, token)).status_code == 200

    by_password = await post(api, "/auth/login/", json={"email": email, "password": "any password at all"})
    unknown = await post(api, "/auth/login/", json={"email": f"x{email}", "password": "any password at all"})
    assert by_password.status_code == unknown.status_code == 401
    assert by_password.json() == unknown.json()


async def test_without_email_or_avatar(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    empty_avatar, no_avatar = new_token(), new_token()
    first_id, second_id = new_yandex_id(), new_yandex_id()
    fake_yandex.profile(
        empty_avatar, id=first_id, login=new_login(), default_avatar_id="0/0-0", is_avatar_empty=True
    )
    fake_yandex.profile(no_avatar, id=second_id, login=new_login(), default_email=None)

    for token, yandex_id in ((empty_avatar, first_id), (no_avatar, second_id)):
        response = await register(api, token)
        assert response.status_code == 200, response.text
        row = await account(db, yandex_id)
        assert row is not None
        assert row["state"] == "active"
        assert row["email"] is None
        assert row["avatar_url"] is None
        assert (await login(api, token)).status_code == 200


@pytest.mark.parametrize(
    ("login_name", "expected"),
    [
        ("Ivan-Petrov-{hex}", "ivan_petrov_{hex}"),
        ("Mr.Smith+{hex}", "mr.smith_{hex}"),
        ("{hex}" + "L" * 40, "{hex}" + "l" * 24),
    ],
)
async def test_login_becomes_a_valid_username(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any, login_name: str, expected: str
) -> None:
    hex_part = uuid.uuid4().hex[:8]
    token, yandex_id = new_token(), new_yandex_id()
    fake_yandex.profile(token, id=yandex_id, login=login_name.format(hex=hex_part))
    response = await register(api, token)
    assert response.status_code == 200, response.text
    row = await account(db, yandex_id)
    assert row is not None
    assert row["username"] == expected.format(hex=hex_part)


async def test_one_letter_login_is_padded(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    letter = "q"
    token, yandex_id = new_token(), new_yandex_id()
    fake_yandex.profile(token, id=yandex_id, login=letter.upper())
    assert (await register(api, token)).status_code == 200
    row = await account(db, yandex_id)
    assert row is not None
    # "q_ya" itself, or (when an earlier run of this session took it) a variant of it.
    assert row["username"] in {"q_ya", f"q_ya_{yandex_id[-4:]}"}
    assert len(row["username"]) >= 2


async def test_taken_username_gets_a_deterministic_variant(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any, make_user: Any
) -> None:
    name = new_login("anna")
    await make_user(username=name)  # a password account already holds the plain name

    first_token, first_id = new_token(), new_yandex_id(last4="4321")
    fake_yandex.profile(first_token, id=first_id, login=name.capitalize())
    assert (await register(api, first_token)).status_code == 200
    first = await account(db, first_id)
    assert first is not None
    assert first["username"] == f"{name}_4321"

    # Same login, same last digits: the full id comes next; someone took that too, so "<login>1".
    second_token, second_id = new_token(), new_yandex_id(last4="4321")
    await make_user(username=f"{name}_{second_id}")
    fake_yandex.profile(second_token, id=second_id, login=name)
    assert (await register(api, second_token)).status_code == 200
    second = await account(db, second_id)
    assert second is not None
    assert second["username"] == f"{name}1"

    # The failed attempts left nothing behind: one credentials row per account.
    rows = await db.fetchval(
        "SELECT count(*) FROM auth.credentials WHERE yandex_id = ANY($1::text[])", [first_id, second_id]
    )
    assert rows == 2
    assert await db.fetchval("SELECT count(*) FROM auth.credentials WHERE state = 'pending'") == 0


async def test_registering_twice_is_409(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    token, yandex_id, name = new_token(), new_yandex_id(), new_login()
    fake_yandex.profile(token, id=yandex_id, login=name, default_email=f"{name}@yandex.ru")
    assert (await register(api, token)).status_code == 200
    before = await counts(db)

    again = await register(api, token)
    assert again.status_code == 409
    assert "already registered" in again.json()["detail"]
    # Another token of the same Yandex user (other login, no email) is still the same account.
    other = new_token()
    fake_yandex.profile(other, id=yandex_id, login=new_login())
    assert (await register(api, other)).status_code == 409
    assert await counts(db) == before


async def test_email_of_another_account_is_409(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any, make_user: Any
) -> None:
    user = await make_user()
    token, yandex_id = new_token(), new_yandex_id()
    fake_yandex.profile(token, id=yandex_id, login=new_login(), default_email=user.email.upper())
    before = await counts(db)
    response = await register(api, token)
    assert response.status_code == 409
    assert await counts(db) == before
    assert await account(db, yandex_id) is None


async def test_log_in_without_an_account_is_404(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    token = new_token()
    fake_yandex.profile(token, id=new_yandex_id(), login=new_login())
    before = await counts(db)
    response = await login(api, token)
    assert response.status_code == 404
    assert response.json()["detail"] == "No user is registered with this Yandex ID"
    assert await counts(db) == before


def _failures(fake: Any) -> dict[str, tuple[Any, int]]:
    """Failure kind → (how the fake answers, the status our API must give)."""
    reply = fake.Reply
    profile = {"id": "1130000000000001", "login": "ghost", "client_id": fake.client_id}
    return {
        "unknown token": (None, 401),
        "forbidden": (reply(status=403, body=b'{"error": "forbidden"}'), 401),
        "token of another app": (reply(profile={**profile, "client_id": "someone-else"}), 401),
        "server error": (reply(status=500, body=b"oops"), 502),
        "unavailable": (reply(status=503, body=b'{"error": "later"}'), 502),
        "unexpected status": (reply(status=404, body=b"{}"), 502),
        "slow": (reply(profile=profile, delay=fake.timeout_seconds + 2), 502),
        "dropped connection": (reply(profile=profile, drop=True), 502),
        "not json": (reply(body=b"<html>hello</html>"), 502),
        "json list": (reply(body=b'[{"id": "1"}]'), 502),
        "no id": (reply(body=b'{"login": "ghost", "client_id": "test-yandex-client-id"}'), 502),
        "id of a wrong type": (reply(body=b'{"id": {"x": 1}, "login": "ghost"}'), 502),
        "login of a wrong type": (reply(profile={**profile, "login": ["a"]}), 502),
        "huge body": (reply(body=b'{"id": "1", "login": "' + b"a" * 200_000 + b'"}'), 502),
    }


FAILURE_KINDS = [
    "unknown token",
    "forbidden",
    "token of another app",
    "server error",
    "unavailable",
    "unexpected status",
    "slow",
    "dropped connection",
    "not json",
    "json list",
    "no id",
    "id of a wrong type",
    "login of a wrong type",
    "huge body",
]


@pytest.mark.parametrize("endpoint", [REGISTER, LOGIN])
@pytest.mark.parametrize("kind", FAILURE_KINDS)
async def test_yandex_failures_write_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any, endpoint: str, kind: str
) -> None:
    failures = _failures(fake_yandex)
    assert sorted(failures) == sorted(FAILURE_KINDS)
    reply, expected = failures[kind]
    token = new_token()
    if reply is not None:
        fake_yandex.reply(token, reply)
    before = await counts(db)
    response = await post(api, endpoint, params={"oauth_token": token}, headers={"Accept-Language": "en"})
    assert response.status_code == expected, response.text
    detail, code = (
        ("Yandex rejected the token", "yandex_token_rejected")
        if expected == 401
        else ("Yandex ID is unavailable", "yandex_unavailable")
    )
    assert response.json() == {"detail": detail, "code": code}
    assert await counts(db) == before
    assert await account(db, "1130000000000001") is None


async def test_yandex_unreachable(api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any) -> None:
    token = new_token()
    fake_yandex.profile(token, id=new_yandex_id(), login=new_login())
    before = await counts(db)
    with fake_yandex.offline():
        for endpoint in (REGISTER, LOGIN):
            response = await post(
                api, endpoint, params={"oauth_token": token}, headers={"Accept-Language": "ru"}
            )
            assert response.status_code == 502, response.text
            assert response.json() == {"detail": "Яндекс ID недоступен", "code": "yandex_unavailable"}
    assert await counts(db) == before
    # Back online, the same token registers.
    assert (await register(api, token)).status_code == 200


@pytest.mark.parametrize("endpoint", [REGISTER, LOGIN])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"oauth_token": ""},
        {"oauth_token": "bad token"},
        {"oauth_token": "a\r\nX: y"},
        {"oauth_token": "a" * 513},
    ],
    ids=["missing", "empty", "space", "header injection", "too long"],
)
async def test_malformed_token_is_422(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any, endpoint: str, params: dict[str, str]
) -> None:
    asked = len(fake_yandex.requests)
    before = await counts(db)
    response = await post(api, endpoint, params=params)
    assert response.status_code == 422, response.text
    assert len(fake_yandex.requests) == asked  # Yandex was not even asked
    assert await counts(db) == before


@asynccontextmanager
async def own_address(base_url: str, source: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client on its own loopback address: nginx's per-address sign-up limit (and the
    Retry-After a 429 asks for) does not make one of a concurrent pair late."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30) as client:
        yield client


# Rounds in which the fake Yandex must see the concurrent requests together; a round whose
# partner came late (the machine was busy) still checks its outcome and is tried again.
ATTEMPTS = 6


async def test_concurrent_registrations_with_one_token(
    base_url: str, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    together = 0
    async with own_address(base_url, "127.0.0.7") as client:
        for _ in range(ATTEMPTS):
            token, yandex_id = new_token(), new_yandex_id()
            email = f"{new_login()}@yandex.ru"
            fake_yandex.profile(token, id=yandex_id, login=new_login(), default_email=email)
            pairing = fake_yandex.hold_together([token], parties=2)
            first, second = await asyncio.gather(register(client, token), register(client, token))
            assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
            count = "SELECT count(*) FROM auth.credentials WHERE yandex_id = $1"
            assert await db.fetchval(count, yandex_id) == 1
            row = await account(db, yandex_id)
            assert row is not None
            assert row["state"] == "active"
            assert row["username"] is not None
            together += pairing.held
            if together == 3:
                break
    assert together == 3, "the two registrations never reached Yandex together"


async def test_concurrent_registrations_with_one_login(
    base_url: str, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    async with own_address(base_url, "127.0.0.8") as client:
        for _ in range(ATTEMPTS):
            name = new_login()
            tokens = [new_token(), new_token()]
            ids = [new_yandex_id(last4="1111"), new_yandex_id(last4="2222")]
            for token, yandex_id in zip(tokens, ids, strict=True):
                fake_yandex.profile(token, id=yandex_id, login=name)
            pairing = fake_yandex.hold_together(tokens, parties=2)
            responses = await asyncio.gather(*(register(client, token) for token in tokens))
            assert [response.status_code for response in responses] == [200, 200], [r.text for r in responses]
            usernames = set()
            for yandex_id in ids:
                row = await account(db, yandex_id)
                assert row is not None
                usernames.add(row["username"])
            # Whoever came second got its own id's variant.
            assert usernames in ({name, f"{name}_2222"}, {name, f"{name}_1111"})
            if pairing.held:
                return
    pytest.fail("the two registrations never reached Yandex together")


async def test_a_held_reply_whose_partner_never_comes_is_still_in_time(
    base_url: str, db: asyncpg.Connection, fake_yandex: Any
) -> None:
    """The fake's pairing gives up on a late partner well inside the auth service's Yandex
    timeout: the request that came alone is answered by Yandex in time and registers (a 502
    here would fail the concurrent tests above whenever the machine is slow)."""
    async with own_address(base_url, "127.0.0.10") as client:
        token, yandex_id = new_token(), new_yandex_id()
        fake_yandex.profile(token, id=yandex_id, login=new_login(), default_email=f"{new_login()}@yandex.ru")
        pairing = fake_yandex.hold_together([token], parties=2)
        response = await register(client, token)
        assert response.status_code == 200, response.text
        assert (pairing.held, pairing.alone) == (False, 1)
        row = await account(db, yandex_id)
        assert row is not None
        assert row["state"] == "active"


async def test_users_service_down_leaves_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, fake_yandex: Any, stack: Any
) -> None:
    token, yandex_id = new_token(), new_yandex_id()
    fake_yandex.profile(token, id=yandex_id, login=new_login(), default_email=f"{new_login()}@yandex.ru")
    before = await counts(db)
    stack.stop_service("users")
    try:
        response = await register(api, token)
    finally:
        stack.start_service("users")
    assert response.status_code == 503, response.text
    assert await counts(db) == before
    assert await account(db, yandex_id) is None
    # Once the users service is back, the same token registers.
    assert (await register(api, token)).status_code == 200
