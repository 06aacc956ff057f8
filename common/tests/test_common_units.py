import pytest
from pydantic import ValidationError

from common.errors import AppError
from common.i18n import MESSAGES, pick_language, translate
from common.settings import async_database_url
from common.tokens import token_from_authorization


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("ru", "ru"),
        ("ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        ("en-US,ru;q=0.5", "en"),
        ("de,ru;q=0.7,en;q=0.3", "ru"),
        ("fr", "en"),
        ("ru;q=0.2,en;q=0.9", "en"),
        ("ru;q=bogus", "en"),
    ],
)
def test_pick_language(header: str | None, expected: str) -> None:
    assert pick_language(header) == expected


def test_every_message_has_both_languages() -> None:
    for key, entry in MESSAGES.items():
        assert entry.get("en"), key
        assert entry.get("ru"), key
        assert translate(key, "ru") == entry["ru"]


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  abc", "abc"), ("abc.def.ghi", "abc.def.ghi")],
)
def test_authorization_forms(header: str, token: str) -> None:
    assert token_from_authorization(header) == token


@pytest.mark.parametrize("header", [None, "", "   ", "Basic abc", "Bearer", "x" * 5000])
def test_bad_authorization_is_401(header: str | None) -> None:
    with pytest.raises(AppError) as raised:
        token_from_authorization(header)
    assert raised.value.status_code == 401


def test_database_url_forms() -> None:
    assert async_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"


def test_production_refuses_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from auth_service.settings import AuthSettings
    from gateway.settings import GatewaySettings

    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("AUTH_QR_TICKET_KEY", "a-real-random-ticket-secret-0123456789")
    monkeypatch.setenv("AUTH_JWT_PRIVATE_KEY", "change-me")
    with pytest.raises(ValidationError, match="AUTH_JWT_PRIVATE_KEY"):
        AuthSettings()
    monkeypatch.delenv("AUTH_JWT_PRIVATE_KEY")
    with pytest.raises(ValidationError, match="AUTH_JWT_PRIVATE_KEY"):
        AuthSettings()
    with pytest.raises(ValidationError, match="GATEWAY_JWT_PUBLIC_KEY"):
        GatewaySettings()
    # Development is forgiving: the run command generates keys.
    monkeypatch.setenv("ENVIRONMENT", "development")
    GatewaySettings()


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        (b'{"text": "plain"}', False),
        (b'{"text": "\\ud83d\\ude00"}', False),
        (b'{"text": "\\u00e9\\u0436"}', False),
        (b'{"text": "\\\\ud800"}', False),
        (b'{"text": "\\ud800"}', True),
        (b'{"text": "\\udc00"}', True),
        (b'{"text": "\\ud83d x \\ude00"}', True),
        (b'{"text": "\\ud83d\\ud83d\\ude00"}', True),
        (b'{"text": "a\\\\\\ud800"}', True),
        (b'{"a": "\\ud83d\\ude00", "b": "\\uDFFF"}', True),
    ],
)
def test_unpaired_surrogates(body: bytes, bad: bool) -> None:
    from common.surrogates import has_unpaired_surrogate

    assert has_unpaired_surrogate(body) is bad
