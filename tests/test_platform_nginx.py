"""What nginx itself answers: routes, JSON errors, docs, request ids, body limits, its access log."""

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import Stack

pytestmark = pytest.mark.usefixtures("stack")


@pytest.mark.parametrize("prefix", ["gateway", "auth", "users", "private", "auth_events", "events"])
async def test_every_service_publishes_docs_without_a_token(api: httpx.AsyncClient, prefix: str) -> None:
    schema = await api.get(f"/{prefix}/openapi.json")
    assert schema.status_code == 200, schema.text
    assert schema.json()["openapi"].startswith("3.")
    docs = await api.get(f"/{prefix}/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert f"/{prefix}/openapi.json" in docs.text
    # The other spelling goes there with a relative Location (scheme, host and port kept) and JSON.
    for page in ("docs", "redoc"):
        moved = await api.get(f"/{prefix}/{page}/")
        assert moved.status_code == 308, (page, moved.status_code, moved.text)
        assert moved.headers["location"] == f"/{prefix}/{page}"
        assert moved.json()["code"] == "moved"
        assert (await api.get(f"/{prefix}/{page}/", follow_redirects=True)).status_code == 200


async def test_unknown_path_is_a_json_404(api: httpx.AsyncClient) -> None:
    for path in ("/", "/nope", "/internal/users/1", "/healthz", "/_auth"):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"detail": "Not found", "code": "not_found"}


async def test_internal_routes_are_not_reachable_through_nginx(api: httpx.AsyncClient) -> None:
    response = await api.put("/internal/users/1", json={"username": "mallory"})
    assert response.status_code in (404, 405)
    assert "detail" in response.json()


async def test_oversized_body_is_a_json_413(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/register/", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is too large", "code": "request_too_large"}


async def test_an_oversized_chunked_body_is_a_json_413(api: httpx.AsyncClient, make_user: Any) -> None:
    """A body sent without a Content-Length is refused only once it passes its location's limit,
    part-way through: the answer is still nginx's JSON 413, on the avatar's 9 MiB limit too."""
    user = await make_user()

    async def chunked(size: int) -> Any:
        piece = b"0" * (256 * 1024)
        for _ in range(size // len(piece)):
            yield piece

    for path, size in (
        ("/users/upload-avatar/", 12 * 1024 * 1024),
        ("/private/start-chat/", 4 * 1024 * 1024),
        ("/auth/register/", 4 * 1024 * 1024),
    ):
        response = await api.request(
            "PATCH" if "avatar" in path else "POST",
            path,
            content=chunked(size),
            headers={**user.headers, "Content-Type": "multipart/form-data; boundary=x"},
        )
        assert "content-length" not in response.request.headers
        assert (response.status_code, response.headers["content-type"]) == (
            413,
            "application/json; charset=utf-8",
        ), (path, response.text[:200])
        assert response.json() == {"detail": "Request body is too large", "code": "request_too_large"}


async def test_request_id_is_returned_and_passed_to_services(api: httpx.AsyncClient, stack: object) -> None:
    response = await api.post("/auth/login/", json={"email": "rid@example.com", "password": "whatever1"})
    request_id = response.headers["X-Request-Id"]
    assert len(request_id) == 32
    from devstack import Stack

    assert isinstance(stack, Stack)
    # The auth service logged the same id for that request.
    log = ""
    for _ in range(20):
        log = stack.service_log("auth")
        if request_id in log:
            break
        import asyncio

        await asyncio.sleep(0.1)
    assert request_id in log
    # Each line says which instance wrote it (the log is JSON off a terminal).
    line = next(line for line in log.splitlines() if request_id in line)
    entry = json.loads(line[line.index("{") :])
    assert entry["instance"] in ("auth1", "auth2"), entry
    assert (entry["service"], entry["request_id"]) == ("auth", request_id)


async def test_error_pages_of_nginx_are_json(api: httpx.AsyncClient) -> None:
    unauthorised = await api.get("/private/chat-list/")
    assert unauthorised.status_code == 401
    assert unauthorised.headers["content-type"].startswith("application/json")
    assert unauthorised.headers["WWW-Authenticate"] == "Bearer"
    assert unauthorised.json() == {"detail": "Not authenticated", "code": "not_authenticated"}
    media_write = await api.post("/media/anything.png", content=b"x")
    assert media_write.status_code == 403
    assert media_write.json() == {"detail": "Forbidden", "code": "forbidden"}
    missing_media = await api.get("/media/avatars/none.png")
    assert missing_media.status_code == 404
    assert missing_media.json() == {"detail": "Not found", "code": "not_found"}


async def test_service_down_gives_a_json_503(
    api: httpx.AsyncClient, stack: object, make_user: object
) -> None:
    from devstack import Stack

    assert isinstance(stack, Stack)
    user = await make_user()  # type: ignore[operator]
    stack.stop_service("gateway")
    try:
        response = await api.get("/users/me/", headers=user.headers)
    finally:
        stack.start_service("gateway")
    assert response.status_code == 503
    assert response.json() == {"detail": "Service temporarily unavailable", "code": "service_unavailable"}
    assert (await api.get("/users/me/", headers=user.headers)).status_code == 200


async def test_a_request_given_up_on_is_still_logged_as_json(stack: Stack, make_user: Any) -> None:
    """A client that leaves before any answer (wrk stopping mid-request does) gets status 000 in
    nginx's terms; its access-log line must still be JSON like every other."""
    user = await make_user()
    marker = f"/private/add-message/{uuid.uuid4().int % 10**12 + 10**12}/"
    body = b'{"text": "never answered"}'
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", stack.config.http_port)
        writer.write(
            f"POST {marker} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {user.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.transport.abort()  # gone before nginx could answer
    log = stack.config.data_dir / "nginx" / "logs" / "access.log"
    # A connection cut before nginx read its request leaves no line at all (there was no request):
    # how many of the 20 are logged depends on timing. Wait until the count stops growing.
    lines: list[str] = []
    for _ in range(50):
        await asyncio.sleep(0.2)
        found = [line for line in log.read_text(errors="replace").splitlines() if marker in line]
        if found and len(found) == len(lines):
            break
        lines = found
    assert lines, "none of the 20 abandoned requests was logged"
    statuses = [json.loads(line)["status"] for line in lines]
    assert all(isinstance(status, int) for status in statuses), statuses
    # Logged as 0 (nginx's 000), or 499 when nginx noticed the client leave while proxying.
    assert any(status in (0, 499) for status in statuses), statuses


async def test_every_access_log_line_is_json(api: httpx.AsyncClient, stack: object) -> None:
    """Every line of nginx's access log parses (a request finalized before it had a status logs
    $status "000", which the format turns into the number 0), whatever the suite sent before."""
    import json

    from devstack import Stack

    assert isinstance(stack, Stack)
    assert (await api.get("/nope")).status_code == 404
    log = stack.config.data_dir / "nginx" / "logs" / "access.log"
    lines = log.read_text().splitlines()
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry["status"], int), line


async def test_a_path_without_its_trailing_slash_is_the_same_route(
    api: httpx.AsyncClient, make_user: object
) -> None:
    """No redirect a client would follow with another method: both spellings are served, each
    through its route's own location (limits and the token check included)."""
    user = await make_user()  # type: ignore[operator]
    for path in ("/auth/login", "/auth/login/"):
        wrong = await api.post(path, json={"email": user.email, "password": "not the password"})
        assert wrong.status_code == 401, (path, wrong.status_code, wrong.text)
        assert wrong.json()["code"] == "invalid_credentials"
    login = await api.post("/auth/login", json={"email": user.email, "password": user.password})
    assert login.status_code == 200, login.text
    for path in ("/users/me", "/users/me/"):
        me = await api.get(path, headers=user.headers)
        assert me.status_code == 200, (path, me.status_code, me.text)
        assert me.json()["id"] == user.id
    # A protected route without its slash still needs a token (nginx's check, not the service's).
    for path in ("/auth/encrypt_user_data", "/auth/logout-all"):
        method = api.get if path.endswith("data") else api.post
        refused = await method(path)
        assert refused.status_code == 401, (path, refused.status_code, refused.text)
        assert refused.json()["code"] == "not_authenticated"


def _closed_connections_to(ports: set[int]) -> int:
    """Sockets in TIME_WAIT whose remote port is one of `ports` (/proc/net/tcp): the connections
    this machine's side (nginx) closed to those ports in the last minute."""
    closed = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "06" and int(fields[2].rsplit(":", 1)[1], 16) in ports:
            closed += 1
    return closed


async def test_the_token_check_keeps_its_connections_to_the_gateway(
    api: httpx.AsyncClient, make_user: Any, stack: Stack
) -> None:
    """nginx asks the gateway on every protected request (auth_request), which reads only the
    answer's status and headers. Asked with GET, the answer's unread body made nginx close the
    connection after each check; asked with HEAD, the connections are kept."""
    user = await make_user()
    ports = {stack.config.ports[instance] for instance in stack.config.instances_of("gateway")}
    before = _closed_connections_to(ports)
    for _ in range(40):
        answer = await api.get("/private/chat-list/?limit=1", headers=user.headers)
        assert answer.status_code == 200, answer.text
    assert _closed_connections_to(ports) - before < 10


def test_an_answer_of_an_instance_never_counts_as_its_failure(stack: Stack) -> None:
    """Only a refused or broken connection, or a timeout, takes an instance out of nginx's
    rotation. A service's own 502 or 503 (Yandex failed or is not configured, its database is
    away) is its answer: counted as the instance's failure (`max_fails=1`), two of them took every
    instance of the service out for `fail_timeout`, and with them every route of it; one anonymous
    GET of /auth/yandex_oauth_url/ on a stack without Yandex answered 503 to every log-in for
    seconds. (Through nginx this needs a GET route that answers 5xx on demand, which no service
    has while its dependencies are up: the rendered configuration is checked instead.)"""
    rendered = (stack.config.data_dir / "nginx" / "nginx.conf").read_text()
    directives = [line.split("#")[0].strip() for line in rendered.splitlines()]
    next_upstream = [line for line in directives if line.startswith("proxy_next_upstream ")]
    assert next_upstream, "no proxy_next_upstream directive"
    for line in next_upstream:
        conditions = set(line.rstrip(";").split()[1:])
        assert conditions <= {"error", "timeout", "off"}, line
