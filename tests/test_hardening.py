"""Issue 12's findings, each tried through nginx as an attacker would: the log-in brake under a
race, input that cannot be stored or rendered, a 500 that must not fail the next request, nginx's
own answers, headers, docs assets and a websocket URL that names its hub twice."""

import asyncio
import json
import re
import socket
import time
import uuid
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from devstack import Stack

pytestmark = pytest.mark.usefixtures("stack")

# make_user (tests/conftest.py): an async factory of registered, logged-in users. Not imported by
# name: with every test folder collected at once, `conftest` is not one module.
MakeUser = Any


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secure_headers(response: httpx.Response, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (what, name, dict(response.headers))


# ---- 1. the per-email brake holds under a race ------------------------------------------------
async def test_concurrent_wrong_passwords_reach_the_check_at_most_the_allowance(
    base_url: str, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    user = await make_user()
    allowance = 10  # AUTH_LOGIN_MAX_FAILURES's default, which the test stack keeps
    guess = {"email": user.email, "password": "not the password"}
    # From an address of its own, so nginx's per-address limit (burst 30) lets all 30 through.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.31")
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=120) as guesser:
        answers = await asyncio.gather(*(guesser.post("/auth/login/", json=guess) for _ in range(30)))
        statuses = [answer.status_code for answer in answers]
        checked = statuses.count(401)
        assert checked <= allowance, f"{checked} guesses reached the password check: {statuses}"
        assert sorted(set(statuses) - {401}) == [429], statuses
        counted = await db.fetchval("SELECT failures FROM auth.login_failures WHERE email = $1", user.email)
        assert counted is not None
        assert counted <= allowance
        assert checked <= counted  # every checked guess was counted before its check
        # The brake holds for the right password too, until the window ends.
        braked = await guesser.post("/auth/login/", json={"email": user.email, "password": user.password})
        assert braked.status_code == 429
        assert braked.json()["code"] == "too_many_requests"
        assert int(braked.headers["Retry-After"]) > 1


# ---- 2. NUL and non-finite numbers are a 422, never a 500 -------------------------------------
def assert_validation_error(response: httpx.Response, what: str) -> None:
    assert response.status_code == 422, (what, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), what
    body = response.json()
    assert body["code"] == "validation_error", what
    assert isinstance(body["detail"], list), what


async def test_nul_in_any_string_is_a_422(
    api: httpx.AsyncClient, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    user = await make_user()
    other = await make_user()
    name = unique("nul")
    email = f"{name}@example.com"
    registration = {"username": name, "email": email, "password": "correct horse battery"}
    for field in ("description", "status", "username", "email", "password"):
        body = {**registration, field: f"a\u0000{field}"}
        if field == "email":
            body[field] = f"{name}\u0000@example.com"
        assert_validation_error(await api.post("/auth/register/", json=body), f"register {field}")
    # Nothing of those attempts holds the email: it registers at once.
    assert await db.fetchval("SELECT count(*) FROM auth.credentials WHERE email = $1", email) == 0
    assert (await api.post("/auth/register/", json=registration)).status_code == 200
    for body in (
        {"email": f"{user.email}\u0000", "password": user.password},
        {"email": user.email, "password": f"{user.password}\u0000"},
    ):
        assert_validation_error(await api.post("/auth/login/", json=body), f"login {body}")
    chat = await api.post("/private/start-chat/", json={"recipient_id": other.id}, headers=user.headers)
    assert chat.status_code == 200, chat.text
    chat_id = chat.json()["chat_id"]
    add = f"/private/add-message/{chat_id}/"
    for body in ({"text": "hi\u0000"}, {"text": "hi", "nonce": "n\u0000"}):
        assert_validation_error(await api.post(add, json=body, headers=user.headers), f"message {body}")
    # A key is a string too, and the query string reaches the database as well.
    assert_validation_error(
        await api.post(add, json={"text": "hi", "x\u0000": 1}, headers=user.headers), "key"
    )
    search = await api.get("/users/user/", params={"username": "a\u0000"}, headers=user.headers)
    assert_validation_error(search, "search")
    # Escapes that are not UTF-8 were read as U+FFFD, and the search answered 200 [].
    for query in ("username=%FF", "username=a%C3", "username=b&limit=%E2%82"):
        not_utf8 = await api.get(f"/users/user/?{query}", headers=user.headers)
        assert_validation_error(not_utf8, query)
        assert not_utf8.json()["detail"][0]["type"] == "string_unicode", query
    cyrillic = await api.get("/users/user/?username=%D0%B1", headers=user.headers)
    assert (cyrillic.status_code, cyrillic.json()) == (200, []), cyrillic.text
    # An escaped backslash followed by "u0000" is plain text, and is stored as it is.
    sent = await api.post(add, json={"text": "C:\\u0000"}, headers=user.headers)
    assert sent.status_code == 200, sent.text


NON_FINITE = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999")


async def test_non_finite_numbers_are_a_422_everywhere(api: httpx.AsyncClient, make_user: MakeUser) -> None:
    user = await make_user()
    other = await make_user()
    chat = await api.post("/private/start-chat/", json={"recipient_id": other.id}, headers=user.headers)
    chat_id = chat.json()["chat_id"]
    json_type = {"Content-Type": "application/json"}
    for value in NON_FINITE:
        text = value.decode()
        for path, body, headers in (
            ("/auth/login/", b'{"email": %s, "password": "x"}' % value, {}),
            ("/auth/login/", b'{"email": "a@b.cd", "password": %s}' % value, {}),
            ("/auth/register/", b'{"username": %s, "email": "a@b.cd", "password": "y"}' % value, {}),
            ("/private/start-chat/", b'{"recipient_id": %s}' % value, user.headers),
            (f"/private/add-message/{chat_id}/", b'{"text": %s}' % value, user.headers),
            (f"/private/add-message/{chat_id}/", b'{"text": "a", "message_answer_id": %s}' % value,
             user.headers),
        ):
            response = await api.post(path, content=body, headers={**json_type, **headers})
            assert_validation_error(response, f"{path} {text}")


# Bodies Python's JSON reader refuses other than with a JSONDecodeError: FastAPI's own answer to
# them was a 400 with the code `http_400`.
UNREADABLE_BODIES = {
    "invalid UTF-8 in a value": b'{"text": "caf\xe9"}',
    "invalid UTF-8 in a key": b'{"te\xffxt": "a"}',
    "a 5,000-digit number": b'{"text": "a", "message_answer_id": ' + b"1" * 5000 + b"}",
    "100,000 levels of nesting": b"[" * 100_000 + b"]" * 100_000,
}


async def test_a_body_json_cannot_read_is_a_422_everywhere(
    api: httpx.AsyncClient, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    user = await make_user()
    other = await make_user()
    chat = await api.post("/private/start-chat/", json={"recipient_id": other.id}, headers=user.headers)
    chat_id = chat.json()["chat_id"]
    sent = await api.post(f"/private/add-message/{chat_id}/", json={"text": "mine"}, headers=user.headers)
    message_id = sent.json()["id"]
    json_type = {"Content-Type": "application/json"}
    for what, body in UNREADABLE_BODIES.items():
        for method, path, headers in (
            ("POST", "/auth/register/", {}),
            ("POST", "/auth/login/", {}),
            ("POST", "/private/start-chat/", user.headers),
            ("POST", f"/private/add-message/{chat_id}/", user.headers),
            ("PATCH", f"/private/{chat_id}/messages/{message_id}/", user.headers),
        ):
            response = await api.request(method, path, content=body, headers={**json_type, **headers})
            assert_validation_error(response, f"{path}: {what}")
            assert response.json()["detail"][0]["type"] == "json_invalid", (path, what)
    count = "SELECT count(*) FROM private_chat.messages WHERE chat_id = $1"
    assert await db.fetchval(count, chat_id) == 1
    text = "SELECT text FROM private_chat.messages WHERE id = $1"
    assert await db.fetchval(text, message_id) == "mine"


async def test_a_422_never_echoes_a_secret(api: httpx.AsyncClient) -> None:
    secret = f"Secret-{uuid.uuid4().hex}"
    for path, body in (
        ("/auth/register/", {"username": "x", "email": "not an email", "password": secret[:6]}),
        ("/auth/register/", {"username": "ok_name", "email": "a@b.cd", "password": [secret]}),
        ("/auth/login/", {"email": ["x"], "password": {"nested": secret}}),
        # A body of the wrong shape is not echoed: a bare string or a list names no member, so
        # any of it could be the password.
        ("/auth/login/", [{"email": "a@b.cd", "password": secret}]),
        ("/auth/login/", secret),
        ("/auth/register/", ["a@b.cd", secret]),
    ):
        response = await api.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert secret not in response.text, (path, response.text)
        assert secret[:6] not in response.text, (path, response.text)


# ---- 3. a 500 never fails the next request ----------------------------------------------------
async def test_after_a_500_the_next_requests_on_the_connection_are_served(
    base_url: str, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    """A real 500: a profile row the service cannot render (a NULL description, written straight
    into the database, as a bad migration or a hand edit would) fails `GET /users/me/` in the
    service's own code. Right after it, POSTs to the same service (nginx never retries a POST on
    another upstream connection) must be answered by the service, not with nginx's 503."""
    user = await make_user()
    await db.execute("ALTER TABLE users.users ALTER COLUMN description DROP NOT NULL")
    try:
        await db.execute("UPDATE users.users SET description = NULL WHERE id = $1", user.id)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
            failures: list[str] = []
            for _ in range(8):
                crashed = await client.get("/users/me/", headers=user.headers)
                assert crashed.status_code == 500, crashed.text
                assert crashed.json()["code"] == "internal_error"
                # Two, so one of them lands on the instance that answered the 500 (round robin).
                for _ in range(2):
                    after = await client.post("/users/upload-avatar/", headers=user.headers)
                    if after.status_code != 422:
                        failures.append(f"{after.status_code} {after.text}")
            assert failures == []
    finally:
        await db.execute("UPDATE users.users SET description = '' WHERE description IS NULL")
        await db.execute("ALTER TABLE users.users ALTER COLUMN description SET NOT NULL")


def _edge_header(stack: Stack) -> bytes:
    """What nginx adds to prove itself to a service, where the stack has such a secret."""
    secret = getattr(stack, "edge_secret", None)
    if not secret:
        return b""
    from common.boundary import EDGE_HEADER  # type: ignore[import-not-found,unused-ignore]

    return f"{EDGE_HEADER}: {secret}\r\n".encode()


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length; (0, b"") when the server closed instead."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, b""
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


async def test_a_service_keeps_the_connection_open_after_a_500(
    stack: Stack, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    """The cause, on a connection like the one nginx keeps to an instance: a service used to close
    it right after sending a 500 (the framework raised the error again once it had answered, and
    the server closed the connection), while nginx had already put it back in its keep-alive
    pool. Now the next request on it is served. The 500 is the same real one as above."""
    user = await make_user()
    await db.execute("ALTER TABLE users.users ALTER COLUMN description DROP NOT NULL")
    try:
        await db.execute("UPDATE users.users SET description = NULL WHERE id = $1", user.id)
        port = stack.config.ports["users1"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(
                    b"GET /users/me/ HTTP/1.1\r\nHost: users\r\nX-User-Id: %d\r\n" % user.id
                    + _edge_header(stack)
                    + b"\r\n"
                )
                status, body = _read_response(sock)
                assert status == 500, (status, body)
                assert json.loads(body)["code"] == "internal_error"
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: users\r\n" + _edge_header(stack) + b"\r\n")
            assert _read_response(sock)[0] == 200
    finally:
        await db.execute("UPDATE users.users SET description = '' WHERE description IS NULL")
        await db.execute("ALTER TABLE users.users ALTER COLUMN description SET NOT NULL")


# ---- 4. every answer nginx makes itself is JSON -----------------------------------------------
def raw_exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Sends bytes no HTTP client would, reads nginx's whole answer (it closes after an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert match, received[:300]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers, body


BAD_REQUESTS = {
    "dot-dot path": b"GET /../x HTTP/1.1\r\nHost: a\r\n\r\n",
    "NUL in path": b"GET /users/%00 HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad escape": b"GET /users/%zz HTTP/1.1\r\nHost: a\r\n\r\n",
    "odd method": b"G@T /users/me/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "TLS hello": bytes.fromhex("160301020001000200fc0303") + b"\x00" * 40,
    "raw spaces": b"GET /users/a b/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "header over the limit": b"GET /users/me/ HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n",
    "bad HTTP version": b"GET /users/me/ HTTP/9.9\r\nHost: a\r\n\r\n",
    # nginx passes a method it does not know on; the service cannot parse it (common.serving).
    "unknown method": b"BREW /auth/login/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "unknown method, hyphen": b"FOO-BAR /auth/register/ HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_nginx_refuses_a_malformed_request_with_json(stack: Stack, name: str) -> None:
    status, headers, body = raw_exchange(stack.config.http_port, BAD_REQUESTS[name])
    assert 400 <= status < 500 or status == 505, (name, status, body[:200])
    assert headers.get("content-type", "").startswith("application/json"), (name, headers, body[:200])
    answer = json.loads(body)
    assert set(answer) == {"detail", "code"}, answer
    assert headers.get("x-request-id"), name
    assert headers.get("x-content-type-options") == "nosniff", name


async def test_nginx_redirects_carry_a_json_body(api: httpx.AsyncClient) -> None:
    for path, target in (("/users", "/users/"), ("/private", "/private/"), ("/qr", "/qr/")):
        response = await api.get(path)
        assert response.status_code == 301, (path, response.text)
        assert response.headers["location"].endswith(target), response.headers
        assert response.headers["content-type"].startswith("application/json"), path
        assert response.json()["code"] == "moved_permanently"


async def test_error_pages_are_not_reachable_as_paths(api: httpx.AsyncClient) -> None:
    response = await api.get("/_errors/400")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# ---- 7. smaller ones --------------------------------------------------------------------------
def _signing_key(stack: Stack) -> Ed25519PrivateKey:
    key = load_pem_private_key((stack.config.data_dir / "keys" / "jwt_ed25519.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


async def test_a_token_with_non_ascii_digits_in_sub_is_refused(
    api: httpx.AsyncClient, stack: Stack, make_user: MakeUser
) -> None:
    user = await make_user()
    now = int(time.time())
    for sub in (str(user.id), str(user.id).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))):
        claims = {"sub": sub, "iat": now, "exp": now + 600, "iss": "chat-auth", "aud": "chat-api",
                  "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, _signing_key(stack), algorithm="EdDSA")
        me = await api.get("/users/me/", headers={"Authorization": f"Bearer {token}"})
        if sub.isascii():
            assert me.status_code == 200  # the same claims in ASCII digits are good
        else:
            assert me.status_code == 401, me.text


async def test_api_and_docs_answers_carry_security_headers(
    api: httpx.AsyncClient, make_user: MakeUser
) -> None:
    user = await make_user()
    answers: dict[str, httpx.Response] = {
        "service 200": await api.get("/users/me/", headers=user.headers),
        "service 422": await api.post("/auth/login/", json={}),
        "nginx 401": await api.get("/users/me/"),
        "nginx 404": await api.get("/nope"),
        "docs page": await api.get("/users/docs"),
        "openapi": await api.get("/private/openapi.json"),
        "redoc page": await api.get("/auth/redoc"),
    }
    for what, response in answers.items():
        assert_secure_headers(response, what)


@pytest.mark.parametrize("prefix", ["gateway", "auth", "users", "private", "auth_events", "events"])
async def test_docs_pages_load_everything_from_the_stack(api: httpx.AsyncClient, prefix: str) -> None:
    for page in ("docs", "redoc"):
        html = await api.get(f"/{prefix}/{page}")
        assert html.status_code == 200, (prefix, page)
        assert "cdn" not in html.text.lower(), html.text
        assert "https://" not in html.text, html.text
        assets = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", html.text)
        assert assets, html.text
        for asset in assets:
            assert asset.startswith("/docs-assets/"), asset
            fetched = await api.get(asset)
            assert fetched.status_code == 200, asset
            assert len(fetched.content) > 1000, asset
            assert fetched.headers["content-type"].split(";")[0] in (
                "text/javascript",
                "text/css",
                "image/png",
            ), asset
            assert_secure_headers(fetched, asset)


async def test_a_websocket_url_naming_two_hubs_is_refused(stack: Stack) -> None:
    base = f"ws://127.0.0.1:{stack.config.http_port}/auth_events/qr_auth/"
    first, second = (uuid.uuid4().hex for _ in range(2))
    # Named twice as written: nginx refuses it before routing.
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{base}?client_id={first}&client_id={second}"):
            pass
    assert refused.value.response.status_code == 400
    # Named twice once decoded (nginx sees one): the service opens no hub for it.
    async with websockets.connect(f"{base}?client_id={first}&client%5Fid={second}") as ws:
        answer: Any = await asyncio.wait_for(ws.recv(), 10)
        assert "hub is full" in answer
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    # One client_id is served as before.
    async with websockets.connect(f"{base}?client_id={first}") as ws:
        opened: Any = await asyncio.wait_for(ws.recv(), 10)
        assert "hub is full" not in opened


COUNT_MISSPELLINGS = (
    ("limit", "+5"),
    ("limit", "05"),
    ("limit", "5.0"),
    ("limit", "1_0"),
    ("limit", " 5"),
    ("offset", "00"),
    ("offset", "-0"),
)


async def test_an_id_in_a_path_or_body_has_one_spelling(api: httpx.AsyncClient, make_user: MakeUser) -> None:
    user = await make_user()
    other = await make_user()
    chat = await api.post("/private/start-chat/", json={"recipient_id": other.id}, headers=user.headers)
    chat_id = chat.json()["chat_id"]
    assert (await api.get(f"/private/{chat_id}/info/", headers=user.headers)).status_code == 200
    arabic = str(chat_id).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for spelling in (f"+{chat_id}", f"0{chat_id}", arabic, f"{chat_id}%20"):
        answer = await api.get(f"/private/{spelling}/info/", headers=user.headers)
        assert_validation_error(answer, spelling)
    # In a JSON body an id is a JSON integer (API.md: ids are integers): not a string, even of
    # the right digits, nor a number with a fraction, even of zero.
    for recipient in (f"+{other.id}", f"0{other.id}", str(other.id), float(other.id), True):
        body = {"recipient_id": recipient}
        answer = await api.post("/private/start-chat/", json=body, headers=user.headers)
        assert_validation_error(answer, str(recipient))
    sent = await api.post(f"/private/add-message/{chat_id}/", json={"text": "a"}, headers=user.headers)
    message_id = sent.json()["id"]
    for answer_to in (str(message_id), float(message_id)):
        body = {"text": "a reply", "message_answer_id": answer_to}
        answer = await api.post(f"/private/add-message/{chat_id}/", json=body, headers=user.headers)
        assert_validation_error(answer, f"message_answer_id {answer_to!r}")
    # A count in a query (limit, offset) has one spelling too, 0 included where it is allowed.
    for path in (f"/private/{chat_id}/messages", "/private/chat-list/", "/users/user/?username=a"):
        joiner = "&" if "?" in path else "?"
        for name, spelling in COUNT_MISSPELLINGS:
            if name == "offset" and path.startswith("/users/"):
                continue
            answer = await api.get(f"{path}{joiner}{name}={spelling}", headers=user.headers)
            assert_validation_error(answer, f"{path} {name}={spelling!r}")
        answer = await api.get(f"{path}{joiner}limit=5", headers=user.headers)
        assert answer.status_code == 200, (path, answer.text)
    page = await api.get(f"/private/{chat_id}/messages?limit=1&offset=0", headers=user.headers)
    assert page.status_code == 200
    assert [message["id"] for message in page.json()] == [message_id]


async def test_every_get_route_answers_head(api: httpx.AsyncClient, make_user: MakeUser) -> None:
    """HEAD is GET without the body (RFC 9110), token check and errors included."""
    user = await make_user()
    other = await make_user()
    body = {"recipient_id": other.id, "text": "hi"}
    chat = await api.post("/private/start-chat/", json=body, headers=user.headers)
    chat_id = chat.json()["chat_id"]
    for path in (
        "/users/me/",
        f"/users/user/?username={user.username[:4]}",
        "/private/chat-list/",
        f"/private/{chat_id}/messages",
        f"/private/{chat_id}/info/",
        "/auth/yandex_oauth_url/",
        "/private/999999999/info/",
    ):
        got = await api.get(path, headers=user.headers)
        head = await api.head(path, headers=user.headers)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers["content-length"] == got.headers["content-length"], path
    # No token: the same 401 as GET; a POST-only route: still 405.
    assert (await api.head("/users/me/")).status_code == 401
    assert (await api.head("/auth/login/")).status_code == 405


async def test_head_changes_nothing_where_a_get_does(api: httpx.AsyncClient, make_user: MakeUser) -> None:
    """The two GET routes that change something (minting a QR ticket, spending one) refuse HEAD:
    a link checker's HEAD minted tickets against the caller's cap of 20 live ones."""
    user = await make_user()
    for _ in range(25):
        head = await api.head("/auth/encrypt_user_data/", headers=user.headers)
        assert (head.status_code, head.headers["allow"]) == (405, "GET")
    minted = await api.get("/auth/encrypt_user_data/", headers=user.headers)
    assert minted.status_code == 200, minted.text
    ticket = minted.json()["token"]
    spend = await api.head("/auth/qr_auth/?client_id=" + "h" * 16, headers={"Authorization": ticket})
    assert (spend.status_code, spend.headers["allow"]) == (405, "GET")
    assert (await api.post("/auth/encrypt_user_data/", headers=user.headers)).headers["allow"] == "GET"


async def test_a_405_lists_every_method_of_the_path(api: httpx.AsyncClient, make_user: MakeUser) -> None:
    """RFC 9110: a 405's Allow names every method the resource answers, on either spelling."""
    user, other = await make_user(), await make_user()
    body = {"recipient_id": other.id, "text": "hi"}
    chat_id = (await api.post("/private/start-chat/", json=body, headers=user.headers)).json()["chat_id"]
    page = await api.get(f"/private/{chat_id}/messages", headers=user.headers)
    message = f"/private/{chat_id}/messages/{page.json()[0]['id']}/"
    for method, path, allowed in (
        ("PUT", "/users/upload-avatar/", "POST, PATCH"),
        ("PUT", "/users/upload-avatar", "POST, PATCH"),
        ("POST", message, "GET, HEAD, PATCH, DELETE"),
        ("PUT", message.rstrip("/"), "GET, HEAD, PATCH, DELETE"),
        ("DELETE", "/users/me/", "GET, HEAD"),
        ("GET", "/auth/login/", "POST"),
    ):
        response = await api.request(method, path, headers=user.headers)
        assert response.status_code == 405, (method, path, response.text)
        assert (response.json()["code"], response.headers["allow"]) == ("method_not_allowed", allowed), path


@pytest.mark.parametrize("path", ["/events/", "/auth_events/qr_auth/?client_id=" + "a" * 16])
async def test_a_plain_get_of_a_websocket_address_is_426(api: httpx.AsyncClient, path: str) -> None:
    """A client that forgot the upgrade (or a browser opening the address) learns what it needs,
    instead of a 404 that says the address is wrong."""
    response = await api.get(path, headers={"Accept-Language": "ru"})
    assert response.status_code == 426, response.text
    assert response.json()["code"] == "upgrade_required"
    assert "websocket" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "handshake"),
    [
        ("/events/", "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        (
            "/events/",
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        ),
        (
            "/events/",
            "POST {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Content-Length: 0\r\n\r\n",
        ),
        (
            "/auth_events/qr_auth/?client_id=" + "a" * 22,
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n",
        ),
    ],
)
def test_a_websocket_handshake_that_cannot_succeed_is_refused_with_json(
    stack: Stack, path: str, handshake: str
) -> None:
    status, headers, body = raw_exchange(stack.config.http_port, handshake.format(path=path).encode())
    assert status == 400, (status, body[:200])
    assert headers.get("content-type", "").startswith("application/json"), (headers, body[:200])
    assert json.loads(body)["code"] == "bad_request"
