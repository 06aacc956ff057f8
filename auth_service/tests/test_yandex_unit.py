"""The Yandex ID client's parsing and error mapping, and username derivation, without a stack.

Yandex itself is replaced by httpx.MockTransport here; the end-to-end cases are in
tests/test_yandex.py (through nginx, against a fake Yandex server).
"""

import json
from collections.abc import Callable
from typing import Any, cast

import anyio
import httpx
import pytest

from auth_service.service import AccountService
from auth_service.yandex.client import YandexClient, parse_profile
from auth_service.yandex.errors import YandexNotConfigured, YandexTokenRejected, YandexUnavailable
from auth_service.yandex.service import YandexAuth, base_username, username_candidates
from common.rules import USERNAME_MAX_LENGTH, USERNAME_RE

Handler = Callable[[httpx.Request], Any]


def client(handler: Handler, timeout: float = 5.0) -> YandexClient:
    http = httpx.AsyncClient(base_url="http://yandex.test", transport=httpx.MockTransport(handler))
    return YandexClient(http, timeout=timeout)


def answer(status: int, body: bytes | dict[str, Any] | list[Any]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/info"
        assert request.url.params["format"] == "json"
        assert request.headers["Authorization"] == "OAuth tok"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return handle


async def test_profile_fields() -> None:
    profile = await client(
        answer(
            200,
            {
                "id": "42",
                "login": "Ivan.Petrov",
                "client_id": "app",
                "default_email": " Ivan@Yandex.RU ",
                "default_avatar_id": "1/abc-2",
                "is_avatar_empty": False,
            },
        )
    ).profile("tok")
    assert profile.id == "42"
    assert profile.login == "Ivan.Petrov"
    assert profile.email == "ivan@yandex.ru"
    assert profile.avatar_url == "https://avatars.yandex.net/get-yapic/1/abc-2/islands-200"
    assert profile.client_id == "app"


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_token(status: int) -> None:
    with pytest.raises(YandexTokenRejected):
        await client(answer(status, b"invalid token")).profile("tok")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"oops"),
        (502, b"{}"),
        (302, b""),
        (400, b"{}"),
        (200, b"not json"),
        (200, b"\xff\xfe"),
        (200, b"[" * 100_000),
        (200, b"[]"),
        (200, b'"id"'),
        (200, b'{"login": "x"}'),
        (200, b'{"id": true}'),
        (200, b'{"id": "../x"}'),
        (200, b'{"id": "1", "login": 5}'),
        (200, b'{"id": "1", "login": "' + b"a" * 70_000 + b'"}'),
    ],
)
async def test_broken_answers(status: int, body: bytes) -> None:
    with pytest.raises(YandexUnavailable):
        await client(answer(status, body)).profile("tok")


async def test_transport_errors_and_time_out() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(30)
        return httpx.Response(200, json={"id": "1"})

    with pytest.raises(YandexUnavailable):
        await client(refuse).profile("tok")
    with pytest.raises(YandexUnavailable):
        await client(hang, timeout=0.1).profile("tok")


def test_optional_fields() -> None:
    profile = parse_profile(
        {
            "id": 7,
            "login": "x",
            "default_email": "not an email",
            "default_avatar_id": "1/a",
            "is_avatar_empty": True,
        }
    )
    assert (profile.id, profile.email, profile.avatar_url, profile.client_id) == ("7", None, None, None)
    assert parse_profile({"id": "7", "default_avatar_id": "1/a?x=<script>"}).avatar_url is None
    assert parse_profile({"id": "7"}).login == ""


@pytest.mark.parametrize(
    ("login", "username"),
    [
        ("Ivan.Petrov", "ivan.petrov"),
        ("ivan-petrov", "ivan_petrov"),
        ("a", "a_ya"),
        ("", "yandex"),
        ("---", "yandex"),
        ("Жора", "yandex"),
        ("x" * 40, "x" * 32),
    ],
)
def test_base_username(login: str, username: str) -> None:
    assert base_username(login) == username
    assert USERNAME_RE.fullmatch(username)


def test_candidates_are_valid_distinct_and_deterministic() -> None:
    candidates = list(username_candidates("Some.Very-Long-Yandex-Login-Name", "1130000012345678"))
    assert candidates == list(username_candidates("Some.Very-Long-Yandex-Login-Name", "1130000012345678"))
    assert len(candidates) == len(set(candidates)) == 12
    assert candidates[:3] == [
        "some.very_long_yandex_login_name",
        "some.very_long_yandex_login_5678",
        "some.very_long_1130000012345678",
    ]
    assert candidates[3] == "some.very_long_yandex_login_nam1"
    for candidate in candidates:
        assert len(candidate) <= USERNAME_MAX_LENGTH
        assert USERNAME_RE.fullmatch(candidate)


def yandex_auth(client_id: str | None, *, state: str | None = None) -> YandexAuth:
    return YandexAuth(
        accounts=cast(AccountService, None),
        client=client(answer(200, {"id": "1", "client_id": "other"})),
        client_id=client_id,
        oauth_url="https://oauth.yandex.ru/",
        redirect_uri=None,
        state=state,
    )


def test_authorize_url() -> None:
    assert yandex_auth("abc").authorize_url() == (
        "https://oauth.yandex.ru/authorize?response_type=token&client_id=abc"
    )
    assert yandex_auth("abc", state="fixed").authorize_url().endswith("&state=fixed")
    assert yandex_auth("abc", state="fixed").authorize_url("mine").endswith("&state=mine")


async def test_not_configured_is_503() -> None:
    with pytest.raises(YandexNotConfigured):
        yandex_auth(None).authorize_url()
    with pytest.raises(YandexNotConfigured):
        await yandex_auth(None).login("tok")
    assert YandexNotConfigured.status_code == 503


async def test_token_of_another_app_is_refused() -> None:
    with pytest.raises(YandexTokenRejected):
        await yandex_auth("mine").login("tok")
