"""Registration, log-in and the token check, through nginx (API.md 4, 6, 7)."""

import asyncio
import base64
import json
import math
import time
import uuid

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.tokens import TOKEN_LEEWAY_SECONDS
from devstack import Stack

pytestmark = pytest.mark.usefixtures("stack")


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    users = await db.fetchval("SELECT count(*) FROM users.users")
    credentials = await db.fetchval("SELECT count(*) FROM auth.credentials")
    return users, credentials


def fresh(prefix: str = "p") -> dict[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    return {"username": name, "email": f"{name}@example.com", "password": "long enough pw"}


async def test_register_login_and_check_token(api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    body = fresh("Bob")
    body["username"] = body["username"].capitalize()
    body["description"] = "hi there"
    body["status"] = "busy"
    registered = await api.post("/auth/register/", json=body)
    assert registered.status_code == 200
    assert registered.json() == {"detail": "success"}

    login = await api.post(
        "/auth/login/", json={"email": body["email"].upper(), "password": body["password"]}
    )
    assert login.status_code == 200
    assert login.json()["type"] == "Bearer"
    token = login.json()["token"]

    check = await api.get("/gateway/get-token/", headers={"Authorization": f"Bearer {token}"})
    assert check.status_code == 200
    user_id = check.json()["user_id"]
    assert check.headers["X-User-Id"] == str(user_id)

    me = await api.get("/users/me/", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    profile = me.json()
    assert profile["id"] == user_id
    assert profile["username"] == body["username"].lower()
    assert profile["description"] == "hi there"
    assert profile["status"] == "busy"
    assert profile["avatar_url"] is None
    state = await db.fetchval("SELECT state FROM auth.credentials WHERE user_id = $1", user_id)
    assert state == "active"


async def test_token_payload_holds_no_secret(api: httpx.AsyncClient, make_user: object) -> None:
    user = await make_user()  # type: ignore[operator]
    header_b64, payload_b64, _ = user.token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    assert header["alg"] == "EdDSA"
    assert set(payload) == {"sub", "exp", "iat", "iss", "aud", "jti"}
    assert payload["sub"] == str(user.id)


async def test_bare_token_is_accepted(api: httpx.AsyncClient, make_user: object) -> None:
    user = await make_user()  # type: ignore[operator]
    check = await api.get("/gateway/get-token/", headers={"Authorization": user.token})
    assert check.status_code == 200
    assert check.json() == {"user_id": user.id}
    me = await api.get("/users/me/", headers={"Authorization": user.token})
    assert me.json()["id"] == user.id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"username": "a"}, "username"),
        ({"username": "x" * 33}, "username"),
        ({"username": "bad name"}, "username"),
        ({"username": "юзер"}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@" + "b" * 300 + ".com"}, "email"),
        ({"email": "a" * 65 + "@example.com"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "p" * 129}, "password"),
        ({"description": "d" * 191}, "description"),
        ({"status": "s" * 129}, "status"),
        ({"username": None}, "username"),
        ({"password": 12345678}, "password"),
    ],
)
async def test_register_rejects_bad_fields(
    api: httpx.AsyncClient, db: asyncpg.Connection, change: dict[str, object], field: str
) -> None:
    before = await counts(db)
    body: dict[str, object] = {**fresh(), **change}
    response = await api.post("/auth/register/", json=body)
    assert response.status_code == 422, response.text
    assert any(field in error["loc"] for error in response.json()["detail"])
    assert await counts(db) == before


@pytest.mark.parametrize("missing", ["username", "email", "password"])
async def test_register_rejects_missing_fields(
    api: httpx.AsyncClient, db: asyncpg.Connection, missing: str
) -> None:
    before = await counts(db)
    body = fresh()
    del body[missing]
    response = await api.post("/auth/register/", json=body)
    assert response.status_code == 422
    assert await counts(db) == before


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[]",
        b'"text"',
        b"\xff\xfe",
        # An unpaired surrogate escape: valid JSON, but no UTF-8 string (hashing would fail).
        b'{"username": "surr_a", "email": "surr@example.com", "password": "\\ud800 long enough"}',
        b'{"username": "surr_b", "email": "s2@example.com", "password": "long pw!", "status": "\\udfff"}',
    ],
)
async def test_register_rejects_malformed_json(
    api: httpx.AsyncClient, db: asyncpg.Connection, raw: bytes
) -> None:
    before = await counts(db)
    response = await api.post("/auth/register/", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "detail" in response.json()
    assert await counts(db) == before


async def test_duplicates_in_any_letter_case(api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    body = fresh("dup")
    assert (await api.post("/auth/register/", json=body)).status_code == 200
    before = await counts(db)

    same_name = {**fresh(), "username": body["username"].upper()}
    response = await api.post("/auth/register/", json=same_name)
    assert response.status_code == 409
    assert response.json() == {"detail": "Username is already taken", "code": "username_taken"}

    same_email = {**fresh(), "email": body["email"].upper()}
    response = await api.post("/auth/register/", json=same_email)
    assert response.status_code == 409
    assert response.json() == {"detail": "Email is already registered", "code": "email_taken"}
    assert await counts(db) == before


@pytest.mark.parametrize(("clash", "source"), [("username", "127.0.0.3"), ("email", "127.0.0.4")])
async def test_concurrent_registrations_exactly_one_wins(
    base_url: str, db: asyncpg.Connection, clash: str, source: str
) -> None:
    before = await counts(db)
    shared = fresh("race")
    bodies = []
    for _ in range(8):
        body = fresh("race")
        body[clash] = shared[clash]
        bodies.append(body)
    # Its own source address, so this burst is not cut by the per-address rate limit.
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as api:
        responses = await asyncio.gather(*(api.post("/auth/register/", json=body) for body in bodies))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * 7, [r.text for r in responses]
    # Exactly one user and one active credential row more; nothing pending or orphaned.
    assert await counts(db) == (before[0] + 1, before[1] + 1)
    assert await db.fetchval("SELECT count(*) FROM auth.credentials WHERE state = 'pending'") == 0
    orphans = await db.fetchval(
        "SELECT count(*) FROM users.users u LEFT JOIN auth.credentials c ON c.user_id = u.id"
        " WHERE c.user_id IS NULL AND u.username LIKE 'race%'"
    )
    assert orphans == 0


async def test_login_failures_look_the_same(api: httpx.AsyncClient, make_user: object) -> None:
    user = await make_user()  # type: ignore[operator]
    wrong_password = await api.post("/auth/login/", json={"email": user.email, "password": "wrong password"})
    unknown_email = await api.post(
        "/auth/login/", json={"email": "nobody@example.com", "password": "whatever1"}
    )
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert (
        wrong_password.json()
        == unknown_email.json()
        == {"detail": "Invalid email or password", "code": "invalid_credentials"}
    )


@pytest.mark.parametrize(
    "body", [{}, {"email": "a@example.com"}, {"password": "x"}, {"email": "", "password": ""}, {"email": 1}]
)
async def test_login_rejects_malformed_bodies(api: httpx.AsyncClient, body: dict[str, object]) -> None:
    response = await api.post("/auth/login/", json=body)
    assert response.status_code == 422


def _signing_key(stack: Stack) -> Ed25519PrivateKey:
    key = load_pem_private_key((stack.config.data_dir / "keys" / "jwt_ed25519.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _claims(user_id: int, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + 600,
        "iss": "chat-auth",
        "aud": "chat-api",
        "jti": "test-jti",
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _forged_tokens(stack: Stack, real_token: str, user_id: int) -> dict[str, str]:
    real_key = _signing_key(stack)
    other_key = Ed25519PrivateKey.generate()
    header, payload, signature = real_token.split(".")
    altered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    altered["sub"] = str(user_id + 1000)
    altered_payload = base64.urlsafe_b64encode(json.dumps(altered).encode()).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return {
        "wrong key": jwt.encode(_claims(user_id), other_key, algorithm="EdDSA"),
        "alg none": f"{none_header}.{payload}.",
        "altered payload": f"{header}.{altered_payload}.{signature}",
        "bad signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "expired": jwt.encode(_claims(user_id, exp=int(time.time()) - 3600), real_key, algorithm="EdDSA"),
        "wrong audience": jwt.encode(_claims(user_id, aud="other"), real_key, algorithm="EdDSA"),
        "wrong issuer": jwt.encode(_claims(user_id, iss="other"), real_key, algorithm="EdDSA"),
        "no jti": jwt.encode(_claims(user_id, jti=None), real_key, algorithm="EdDSA"),
        "non-numeric sub": jwt.encode(_claims(user_id, sub="admin"), real_key, algorithm="EdDSA"),
        "garbage": "not.a.token",
    }


async def test_forged_and_expired_tokens_are_refused(
    api: httpx.AsyncClient, stack: Stack, make_user: object
) -> None:
    user = await make_user()  # type: ignore[operator]
    # Sanity: a token minted with the real key and the same claims shape passes.
    good = jwt.encode(_claims(user.id), _signing_key(stack), algorithm="EdDSA")
    assert (
        await api.get("/gateway/get-token/", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200
    for name, token in _forged_tokens(stack, user.token, user.id).items():
        headers = {"Authorization": f"Bearer {token}"}
        check = await api.get("/gateway/get-token/", headers=headers)
        assert check.status_code == 401, name
        assert "detail" in check.json(), name
        protected = await api.get("/users/me/", headers=headers)
        assert protected.status_code == 401, name
        assert protected.json() == {"detail": "Not authenticated", "code": "not_authenticated"}, name


async def test_a_token_that_expires_while_remembered_is_refused(
    api: httpx.AsyncClient, stack: Stack, make_user: object
) -> None:
    """The gateway remembers a good signature; the expiry is still checked on every use."""
    user = await make_user()  # type: ignore[operator]
    for _ in range(3):
        # Already past `exp`, but inside the verification leeway for about four more seconds.
        exp = math.ceil(time.time()) + 4 - TOKEN_LEEWAY_SECONDS
        claims = _claims(user.id, exp=exp, jti=uuid.uuid4().hex)
        headers = {"Authorization": f"Bearer {jwt.encode(claims, _signing_key(stack), algorithm='EdDSA')}"}
        # Several times, so every gateway process nginx spreads the checks over remembers it.
        answers = [(await api.get("/users/me/", headers=headers)).status_code for _ in range(4)]
        if time.time() < exp + TOKEN_LEEWAY_SECONDS:
            assert answers == [200] * 4
            break
        # The machine was too slow to use the token inside its window: try again.
    else:
        pytest.fail("the token never fitted inside its window")
    await asyncio.sleep(max(0.0, exp + TOKEN_LEEWAY_SECONDS + 0.2 - time.time()))
    for _ in range(4):
        assert (await api.get("/users/me/", headers=headers)).status_code == 401
        refused = await api.get("/gateway/get-token/", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_token"


async def test_missing_or_odd_authorization(api: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ):
        check = await api.get("/gateway/get-token/", headers=headers)
        assert check.status_code == 401, headers
        assert (await api.get("/users/me/", headers=headers)).status_code == 401


async def test_spoofed_user_id_never_reaches_a_service(api: httpx.AsyncClient, make_user: object) -> None:
    alice = await make_user()  # type: ignore[operator]
    bob = await make_user()  # type: ignore[operator]
    me = await api.get("/users/me/", headers={**alice.headers, "X-User-Id": str(bob.id)})
    assert me.status_code == 200
    assert me.json()["id"] == alice.id
    anonymous = await api.get("/users/me/", headers={"X-User-Id": str(bob.id)})
    assert anonymous.status_code == 401
    # A public location strips it too: logout needs a real token, not a header.
    spoofed_logout = await api.post("/auth/logout/", headers={"X-User-Id": str(bob.id)})
    assert spoofed_logout.status_code == 401


async def test_logout_revokes_the_token(api: httpx.AsyncClient, make_user: object) -> None:
    user = await make_user()  # type: ignore[operator]
    other_login = await api.post("/auth/login/", json={"email": user.email, "password": user.password})
    other_token = other_login.json()["token"]
    assert (await api.post("/auth/logout/", headers=user.headers)).status_code == 200
    assert (await api.get("/gateway/get-token/", headers=user.headers)).status_code == 401
    assert (await api.get("/users/me/", headers=user.headers)).status_code == 401
    # Only that token: the user's other session still works.
    assert (await api.get("/users/me/", headers={"Authorization": other_token})).status_code == 200


async def test_logout_all_ends_every_token_of_the_user(api: httpx.AsyncClient, make_user: object) -> None:
    user = await make_user()  # type: ignore[operator]
    other = await make_user()  # type: ignore[operator]
    second = await api.post("/auth/login/", json={"email": user.email, "password": user.password})
    second_headers = {"Authorization": f"Bearer {second.json()['token']}"}
    assert (await api.get("/users/me/", headers=second_headers)).status_code == 200

    ended = await api.post("/auth/logout-all/", headers=second_headers)
    assert ended.status_code == 200, ended.text
    assert ended.json() == {"detail": "success"}
    # Both of the user's tokens, on every gateway instance (nginx spreads the checks over them).
    for _ in range(6):
        for headers in (user.headers, second_headers):
            assert (await api.get("/gateway/get-token/", headers=headers)).status_code == 401
            assert (await api.get("/users/me/", headers=headers)).status_code == 401
    assert (await api.post("/auth/logout-all/", headers=user.headers)).status_code == 401
    # Another user is untouched; a log-in right after the cutoff gives a token that works.
    assert (await api.get("/users/me/", headers=other.headers)).status_code == 200
    fresh_login = await api.post("/auth/login/", json={"email": user.email, "password": user.password})
    fresh_headers = {"Authorization": f"Bearer {fresh_login.json()['token']}"}
    for _ in range(4):
        me = await api.get("/users/me/", headers=fresh_headers)
        assert me.status_code == 200, me.text
        assert me.json()["id"] == user.id


async def test_logout_all_needs_a_token(api: httpx.AsyncClient, make_user: object) -> None:
    user = await make_user()  # type: ignore[operator]
    spoofed = await api.post("/auth/logout-all/", headers={"X-User-Id": str(user.id)})
    assert spoofed.status_code == 401
    assert spoofed.json()["code"] == "not_authenticated"
    assert (await api.get("/users/me/", headers=user.headers)).status_code == 200


async def test_accept_language_picks_messages_and_is_stored(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = fresh("ru")
    registered = await api.post("/auth/register/", json=body, headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert registered.status_code == 200
    locale = await db.fetchval("SELECT locale FROM users.users WHERE username = $1", body["username"])
    assert locale == "ru"
    failed = await api.post(
        "/auth/login/",
        json={"email": body["email"], "password": "wrong one"},
        headers={"Accept-Language": "ru"},
    )
    assert failed.status_code == 401
    assert failed.json() == {"detail": "Неверный email или пароль", "code": "invalid_credentials"}
    nginx_401 = await api.get("/users/me/", headers={"Accept-Language": "ru"})
    assert nginx_401.json() == {"detail": "Требуется авторизация", "code": "not_authenticated"}
    english = await api.post("/auth/login/", json={"email": body["email"], "password": "wrong one"})
    assert english.json() == {"detail": "Invalid email or password", "code": "invalid_credentials"}
    # q-values decide, in nginx's 401 as in the services' answers, and the answer names its language.
    for header, language in (
        ("en;q=0.1, ru;q=0.9", "ru"),
        ("ru;q=0, en", "en"),
        ("fr, ru;q=0.5", "ru"),
        ("ru;q=0.2, en;q=0.8", "en"),
    ):
        service = await api.post(
            "/auth/login/",
            json={"email": body["email"], "password": "wrong one"},
            headers={"Accept-Language": header},
        )
        nginx = await api.get("/users/me/", headers={"Accept-Language": header})
        russian = language == "ru"
        assert (service.json()["detail"] == "Неверный email или пароль") is russian, header
        assert (nginx.json()["detail"] == "Требуется авторизация") is russian, header
        assert service.headers["content-language"] == language, header


async def test_registration_with_users_service_down_leaves_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, stack: Stack
) -> None:
    before = await counts(db)
    stack.stop_service("users")
    try:
        response = await api.post("/auth/register/", json=fresh("down"))
    finally:
        stack.start_service("users")
    assert response.status_code == 503
    assert "detail" in response.json()
    assert await counts(db) == before
    # And the service works again once the users service is back.
    assert (await api.post("/auth/register/", json=fresh("back"))).status_code == 200


NGINX_429 = {"detail": "Too many requests, try again later", "code": "too_many_requests", "retry_after": 1}


async def test_login_is_rate_limited_per_client(base_url: str) -> None:
    victim = f"victim_{uuid.uuid4().hex[:8]}@example.com"
    guess = {"email": victim, "password": "guess guess"}
    # First the auth service's own per-email brake is set (from an address of its own), so the
    # guesses nginx lets through are refused without a password hash each: thirty hash checks at
    # once can outlast nginx's proxy timeout on a loaded 2-core machine.
    primer = httpx.AsyncClient(
        base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.9"), timeout=60
    )
    async with primer:
        for _ in range(10):
            assert (await primer.post("/auth/login/", json=guess)).status_code == 401
        braked = await primer.post("/auth/login/", json=guess)
        assert braked.status_code == 429
        assert braked.json()["detail"] != NGINX_429["detail"]  # the service's answer, not nginx's
    # A flood from another loopback address, so the rest of the suite keeps its own budget.
    flood = httpx.AsyncClient(
        base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"), timeout=60
    )
    other = httpx.AsyncClient(
        base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.10"), timeout=60
    )
    async with flood, other:
        responses = await asyncio.gather(*(flood.post("/auth/login/", json=guess) for _ in range(60)))
        # While the flood goes on, another client asks: the limit is the flooding address's.
        flooding = True

        async def keep_flooding() -> None:
            while flooding:
                responses.append(await flood.post("/auth/login/", json=guess))

        floods = [asyncio.create_task(keep_flooding()) for _ in range(8)]
        try:
            others = [await other.post("/auth/login/", json=guess) for _ in range(5)]
        finally:
            flooding = False
            await asyncio.gather(*floods)
    assert all(response.status_code == 429 for response in [*responses, *others])
    by_nginx = [response for response in responses if response.json() == NGINX_429]
    assert len(by_nginx) >= 30, "a flood of log-ins must be limited by nginx"
    assert by_nginx[0].headers["Retry-After"].isdigit()
    # What nginx let through reached the service and met its brake; so did every other client's.
    brake = braked.json()["detail"]
    assert all(response.json()["detail"] == brake for response in responses if response not in by_nginx)
    assert [response.json()["detail"] for response in others] == [brake] * 5


async def nginx_saw(stack: Stack, response: httpx.Response) -> str:
    """The client address nginx logged for this response (found by its X-Request-Id)."""
    request_id = response.headers["X-Request-Id"]
    log = stack.config.data_dir / "nginx" / "logs" / "access.log"
    for _ in range(50):  # nginx writes the line once the response is finished
        for line in log.read_text(errors="replace").splitlines():
            if f'"request_id":"{request_id}"' in line:
                return str(json.loads(line)["remote"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"request {request_id} is not in nginx's access log")


async def test_repeated_failures_lock_the_email_whoever_asks(
    base_url: str, make_user: object, stack: Stack
) -> None:
    user = await make_user()  # type: ignore[operator]
    # Two clients that nginx tells apart: each binds its own loopback source address (nginx
    # listens on 127.0.0.1 and passes $remote_addr on), so the lock is shown to hold for an
    # address that never failed, and the log-in rate limit of one is not the other's.
    guesser = httpx.AsyncClient(
        base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.5"), timeout=60
    )
    owner = httpx.AsyncClient(
        base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.6"), timeout=60
    )
    async with guesser, owner:
        guess = {"email": user.email, "password": "not it at all"}
        for _ in range(10):
            wrong = await guesser.post("/auth/login/", json=guess)
            assert wrong.status_code == 401
        assert await nginx_saw(stack, wrong) == "127.0.0.5"
        locked = await owner.post("/auth/login/", json={"email": user.email, "password": user.password})
        assert await nginx_saw(stack, locked) == "127.0.0.6"
        assert locked.status_code == 429, locked.text
        assert int(locked.headers["Retry-After"]) > 0
        # An unknown email is braked the same way, so the brake does not reveal who is registered.
        for _ in range(10):
            await guesser.post("/auth/login/", json={"email": "ghost@example.com", "password": "nope nope"})
        ghost = await owner.post("/auth/login/", json={"email": "ghost@example.com", "password": "nope nope"})
        assert ghost.status_code == 429
        # The same answer (the wait in retry_after is each lock's own).
        assert {**ghost.json(), "retry_after": None} == {**locked.json(), "retry_after": None}
        assert ghost.json()["retry_after"] > 0


async def test_unfinished_registration_is_cleaned_up(api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """A registration that crashed between its steps (pending credentials, profile created)."""
    user_id = 900_000_000 + uuid.uuid4().int % 1_000_000
    name = f"crashed_{uuid.uuid4().hex[:8]}"
    await db.execute(
        "INSERT INTO auth.credentials (user_id, email, password_hash, state, created_at)"
        " VALUES ($1, $2, 'x', 'pending', now() - interval '1 hour')",
        user_id,
        f"{name}@example.com",
    )
    await db.execute("INSERT INTO users.users (id, username) VALUES ($1, $2)", user_id, name)
    for _ in range(100):
        left = await db.fetchval(
            "SELECT (SELECT count(*) FROM auth.credentials WHERE user_id = $1)"
            " + (SELECT count(*) FROM users.users WHERE id = $1)",
            user_id,
        )
        if left == 0:
            break
        await asyncio.sleep(0.1)
    assert left == 0
    # The email and username are free again.
    body = {"username": name, "email": f"{name}@example.com", "password": "long enough pw"}
    assert (await api.post("/auth/register/", json=body)).status_code == 200
