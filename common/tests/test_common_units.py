import importlib
import re

import pytest
from pydantic import ValidationError

from common.errors import AppError, error_responses
from common.i18n import pick_language
from common.ids import parse_id
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


ERROR_MODULES = (
    "common.errors",
    "auth_service.errors",
    "auth_service.qr.errors",
    "auth_service.yandex.errors",
    "users_service.errors",
    "private_chat_service.errors",
)


def all_error_types() -> list[type[AppError]]:
    for module in ERROR_MODULES:
        importlib.import_module(module)
    found: list[type[AppError]] = []
    pending = [AppError]
    while pending:
        error = pending.pop()
        found.append(error)
        pending.extend(error.__subclasses__())
    return found


def test_every_error_has_a_code_a_status_and_both_languages() -> None:
    errors = all_error_types()
    assert len(errors) > 15
    for error in errors:
        assert re.fullmatch(r"[a-z][a-z0-9_]+", error.code), error
        assert 400 <= error.status_code <= 599, error
        assert error.message.en.strip(), error
        assert error.message.ru.strip(), error
        assert error.message.en != error.message.ru, error


def test_a_code_means_one_failure() -> None:
    """Two services may raise the same failure (username_taken), never two meanings of one code."""
    by_code: dict[str, set[tuple[int, str]]] = {}
    for error in all_error_types():
        by_code.setdefault(error.code, set()).add((error.status_code, error.message.en))
    assert {code: meanings for code, meanings in by_code.items() if len(meanings) > 1} == {}


def test_error_body_and_documented_responses() -> None:
    from private_chat_service.errors import ChatNotFound, MessageNotFound, NotChatMember

    assert ChatNotFound().body("ru") == {"detail": "Переписка не найдена", "code": "chat_not_found"}
    documented = error_responses(ChatNotFound, NotChatMember, MessageNotFound)
    assert sorted(documented) == [403, 404]
    assert set(documented[404]["content"]["application/json"]["examples"]) == {
        "chat_not_found",
        "message_not_found",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", 2),
        ("9223372036854775807", 2**63 - 1),
        ("٢", None),
        ("２", None),
        ("0", None),
        ("-1", None),
        ("", None),
        ("+2", None),
        (" 2", None),
        ("9223372036854775808", None),
        ("1" * 30, None),
    ],
)
def test_ids_are_ascii_digits_only(text: str, expected: int | None) -> None:
    assert parse_id(text) == expected


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
    # The trust boundary's secrets, every service's (common/boundary.py): required in production.
    for name in ("EDGE_SECRET", "SERVICE_SECRET"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    with pytest.raises(ValidationError, match="EDGE_SECRET, SERVICE_SECRET"):
        GatewaySettings()
    monkeypatch.setenv("EDGE_SECRET", "short")
    monkeypatch.setenv("SERVICE_SECRET", "a-real-random-service-secret-0123456789")
    with pytest.raises(ValidationError, match="EDGE_SECRET must be at least 16 characters"):
        GatewaySettings()
    monkeypatch.setenv("EDGE_SECRET", "a-real-random-edge-secret-0123456789")
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


@pytest.mark.parametrize(
    ("body", "nul", "non_finite"),
    [
        (b'{"text": "plain"}', False, False),
        (b'{"text": "a\\u0000b"}', True, False),
        (b'{"a\\u0000": 1}', True, False),
        (b'{"text": "C:\\\\u0000"}', False, False),
        (b'{"text": "C:\\\\\\u0000"}', True, False),
        (b'{"n": NaN}', False, True),
        (b'{"n": [1, -Infinity]}', False, True),
        (b'{"n": 1e999}', False, True),
        (b'{"n": 1e9, "s": "NaN Infinity 1e999"}', False, False),
        (b'{"n": 1e9', False, False),  # not JSON: the framework answers that itself
    ],
)
def test_input_guard_finds_nul_and_non_finite_numbers(body: bytes, nul: bool, non_finite: bool) -> None:
    from common.input_guard import has_non_finite_number, has_nul_escape

    assert has_nul_escape(body) is nul
    assert has_non_finite_number(body) is non_finite


def test_a_422_never_echoes_secret_fields() -> None:
    from common.errors import _redacted

    error = {"type": "string_too_short", "loc": ["body", "password"], "input": "hunter2", "ctx": {"a": 8}}
    assert "input" not in _redacted(error)
    whole = {"type": "model_attributes_type", "loc": ["body"], "input": {"email": "a", "Password": "x"}}
    assert _redacted(whole)["input"] == {"email": "a", "Password": "[redacted]"}
    for bare in ("hunter2", ["a@b.cd", "hunter2"]):
        redacted = _redacted({"type": "model_attributes_type", "loc": ("body",), "input": bare})
        assert "input" not in redacted
        assert redacted["type"] == "model_attributes_type"


def test_a_422_quotes_at_most_256_characters_of_a_string() -> None:
    from common.errors import ECHO_MAX_CHARS, _redacted

    long_text = "x" * 5000
    error = {"type": "string_too_long", "loc": ["body", "text"], "input": long_text}
    assert _redacted(error)["input"] == "x" * ECHO_MAX_CHARS + "…"
    whole = {"type": "missing", "loc": ["body", "chat"], "input": {"text": long_text, "n": [long_text, 1]}}
    assert _redacted(whole)["input"] == {"text": "x" * 256 + "…", "n": ["x" * 256 + "…", 1]}
    short = {"type": "string_too_short", "loc": ["body", "username"], "input": "b"}
    assert _redacted(short) == short


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        (b"", None),
        (b"limit=5&offset=0", None),
        (b"a==", None),  # its value is "="
        (b"limit=&offset=", b""),
        (b"limit&offset=3", b"offset=3"),
        (b"limit=5&offset=", b"limit=5"),
        (b"a=1&&b=2", b"a=1&b=2"),
        (b"q=a%3D&x=", b"q=a%3D"),
    ],
)
def test_query_parameters_without_a_value_are_dropped(query: bytes, kept: bytes | None) -> None:
    from common.input_guard import without_empty_values

    assert without_empty_values(query) == kept
