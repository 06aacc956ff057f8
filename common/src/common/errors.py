"""Typed errors: one class per failure, each with a status, a stable `code` and its messages.

A service raises `ChatNotFound()`; the handler renders `{"detail": <message in the caller's
language>, "code": "chat_not_found"}` with the class's status. Code catches failures by type,
never by string, and a route documents its errors with `error_responses(ChatNotFound, ...)`, so
the OpenAPI document lists exactly what the route can answer. Errors every service shares live
here; a service's own live in its `errors.py`.
"""

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from common.head import refuses_head
from common.i18n import Language, pick_language
from common.outages import OUTAGE_CANDIDATES, is_outage

logger = logging.getLogger("common.errors")


@dataclass(frozen=True, slots=True)
class Message:
    """A message in every language a client may ask for."""

    en: str
    ru: str

    def in_language(self, language: Language) -> str:
        return self.ru if language == "ru" else self.en


class ErrorBody(BaseModel):
    """Every error answer: `detail` for people (translated), `code` for programs (stable)."""

    detail: str
    code: str


class RetryLaterBody(ErrorBody):
    """A 429: also the exact wait in seconds (fractional; the Retry-After header rounds it up)."""

    retry_after: float


class AppError(Exception):
    """An expected failure a client caused or can act on. Subclasses set the class attributes."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    message: ClassVar[Message] = Message("Bad request", "Некорректный запрос")
    # Headers every instance carries (e.g. WWW-Authenticate on a 401).
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, reason: str = "", *, headers: Mapping[str, str] | None = None) -> None:
        # `reason` is for logs and tracebacks only; a client sees `message` and `code`.
        super().__init__(reason or self.code)
        self.headers = {**self.default_headers, **(headers or {})}

    def body(self, language: Language) -> dict[str, Any]:
        """The JSON answer; subclasses may add fields (a 429 adds `retry_after`)."""
        return {"detail": self.message.in_language(language), "code": self.code}


# ---- errors more than one service raises ------------------------------------------------------
class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"
    message = Message("Not authenticated", "Требуется авторизация")
    default_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class UntrustedCaller(AppError):
    """A request that did not come through nginx (or, for /internal/, from a service): a local
    process talking to a service's port directly (common.boundary)."""

    status_code = 403
    code = "untrusted_caller"
    message = Message(
        "Not allowed: this address serves the stack's nginx and services only",
        "Запрещено: этот адрес обслуживает только nginx и сервисы стека",
    )


class InvalidToken(AppError):
    status_code = 401
    code = "invalid_token"
    message = Message("Invalid or expired token", "Недействительный или просроченный токен")
    default_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class UserNotFound(AppError):
    status_code = 404
    code = "user_not_found"
    message = Message("User not found", "Пользователь не найден")


class UsernameTaken(AppError):
    """Raised by the users service (unique username) and by the auth service's sign-up saga."""

    status_code = 409
    code = "username_taken"
    message = Message("Username is already taken", "Имя пользователя уже занято")


class TooManyRequests(AppError):
    """Refused for now; `retry_after` seconds is when asking again can succeed."""

    status_code = 429
    code = "too_many_requests"
    message = Message("Too many requests", "Слишком много запросов")

    def __init__(self, retry_after: float, *, headers: Mapping[str, str] | None = None) -> None:
        # Retry-After takes whole seconds: round up, so a client that obeys it is not refused again.
        whole = max(1, int(retry_after) + (retry_after % 1 > 0))
        super().__init__(headers={"Retry-After": str(whole), **(headers or {})})
        self.retry_after = retry_after

    def body(self, language: Language) -> dict[str, Any]:
        # The exact wait (fractional seconds, API.md 21), besides the header's whole seconds.
        return {**super().body(language), "retry_after": round(float(self.retry_after), 3)}


class UpgradeRequired(AppError):
    """Plain HTTP to an address that only takes websockets (the event gateway, the QR hubs)."""

    status_code = 426
    code = "upgrade_required"
    message = Message(
        "This address takes websocket connections only (a GET with Upgrade: websocket)",
        "Этот адрес принимает только соединения websocket (GET с Upgrade: websocket)",
    )
    default_headers: ClassVar[Mapping[str, str]] = {"Upgrade": "websocket"}


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    message = Message(
        "A backing service is unavailable, try again later",
        "Внутренний сервис недоступен, повторите позже",
    )
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "5"}


# Answers the framework itself makes (unknown path, wrong method, a crash), with their codes.
NOT_FOUND = Message("Not found", "Не найдено")
METHOD_NOT_ALLOWED = Message("Method not allowed", "Метод не поддерживается")
INTERNAL_ERROR = Message("Internal server error", "Внутренняя ошибка сервера")
VALIDATION_ERROR_CODE = "validation_error"


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: each status it can answer, with every code it can carry there."""
    by_status: dict[int, list[type[AppError]]] = {}
    for error in errors:
        by_status.setdefault(error.status_code, []).append(error)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, group in sorted(by_status.items()):
        retry_later = all(issubclass(error, TooManyRequests) for error in group)
        extra = {"retry_after": 1.5} if retry_later else {}
        responses[status] = {
            "model": RetryLaterBody if retry_later else ErrorBody,
            "description": "; ".join(f"`{error.code}`: {error.message.en}" for error in group),
            "content": {
                "application/json": {
                    "examples": {
                        error.code: {"value": {"detail": error.message.en, "code": error.code, **extra}}
                        for error in group
                    }
                }
            },
        }
    return responses


def _language(request: Request) -> Language:
    return pick_language(request.headers.get("accept-language"))


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Its `detail` in the language asked for, named in Content-Language (nginx's 401 after a token
    check speaks the language the gateway's answer names)."""
    assert isinstance(exc, AppError)
    language = _language(request)
    headers = {**exc.headers, "Content-Language": language}
    return JSONResponse(exc.body(language), status_code=exc.status_code, headers=headers)


# FastAPI answers a JSON body it could not read with a 400 "There was an error parsing the body"
# when the reason is not a JSONDecodeError (which is its 422 `json_invalid`): bytes that are not
# UTF-8, a number of more digits than Python converts, nesting deeper than its recursion limit.
# To a client these are malformed bodies like any other (API.md: 422 for malformed bodies).
_UNREADABLE_JSON = (
    (UnicodeDecodeError, "Invalid UTF-8"),
    (RecursionError, "Nested too deeply"),
    (ValueError, "Number too long"),
)


def _body_parse_failure(request: Request, exc: StarletteHTTPException) -> RequestValidationError | None:
    """The 422 FastAPI would give a malformed JSON body, for the 400 it gives some of them; and the
    same 422 for a form body it cannot read (no boundary, a broken part, too many parts, a field
    part over 1 MiB), which Starlette answers with a 400 of its own."""
    if exc.status_code != 400:
        return None
    if isinstance(exc.__context__, MultiPartException):
        problem = {"type": "multipart_invalid", "loc": ("body",), "msg": "Form body error", "input": {}}
        return RequestValidationError([{**problem, "ctx": {"error": exc.__context__.message}}])
    cause = exc.__cause__
    if cause is None:
        return None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and not (content_type == "application/json" or content_type.endswith("+json")):
        return None
    reason = next((text for kind, text in _UNREADABLE_JSON if isinstance(cause, kind)), None)
    if reason is None:
        return None
    position = cause.start if isinstance(cause, UnicodeDecodeError) else 0
    error = {"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error"}
    return RequestValidationError([{**error, "input": {}, "ctx": {"error": reason}}])


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    malformed = _body_parse_failure(request, exc)
    if malformed is not None:
        # Through the app's own 422 handler: a rate-limited route counts it (check_before_validation_errors).
        handler = request.app.exception_handlers.get(RequestValidationError, _validation_error_handler)
        answer: Response = await handler(request, malformed)
        return answer
    language = _language(request)
    detail: Any = exc.detail
    if exc.status_code == 404:
        code = "not_found"
        if detail == "Not Found":
            detail = NOT_FOUND.in_language(language)
    elif exc.status_code == 405:
        code = "method_not_allowed"
        if detail == "Method Not Allowed":
            detail = METHOD_NOT_ALLOWED.in_language(language)
        return JSONResponse(
            {"detail": detail, "code": code},
            status_code=405,
            headers={**(exc.headers or {}), "Allow": _allowed_methods(request), "Content-Language": language},
        )
    else:
        code = f"http_{exc.status_code}"
    headers = {**(exc.headers or {}), "Content-Language": language}
    return JSONResponse({"detail": detail, "code": code}, status_code=exc.status_code, headers=headers)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method the path answers (RFC 9110: a 405 lists them all). The router's own 405 names
    only the first route that matched the path, and each method of a path is a route of its own.
    HEAD is answered wherever GET is, except where the app refuses it (common.head)."""
    scope, routes = request.scope, request.app.router.routes
    path: str = scope["path"]
    # Either spelling of the path (common.app answers both).
    spellings = (path, path[:-1] if path.endswith("/") else path + "/")
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**scope, "path": spelling, "method": method})[0] is Match.FULL
            for spelling in spellings
            for route in routes
        )
    ]
    if "GET" in allowed and not refuses_head(getattr(request.app.state, "head_refused", frozenset()), scope):
        allowed.insert(1, "HEAD")
    return ", ".join(allowed)


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    return JSONResponse(
        {"detail": INTERNAL_ERROR.in_language(_language(request)), "code": "internal_error"},
        status_code=500,
    )


async def _outage_handler(request: Request, exc: Exception) -> JSONResponse:
    """The database or Redis could not be reached, broke off, or did not answer in time: a 503 the
    client can retry, never a 500. Anything else of the same classes is an unexpected error."""
    if not is_outage(exc):
        return await _unexpected_error_handler(request, exc)
    logger.warning(
        "backing service unavailable", extra={"path": request.url.path, "error": repr(exc)[:300]}
    )
    return await _app_error_handler(request, ServiceUnavailable(repr(exc)))


def _printable(value: Any) -> Any:
    """The validation list echoes client input; make any str in it encodable as UTF-8, and any
    number in it JSON (a NaN or an infinity is not: rendering it would raise)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    return value


# Fields whose value a 422 never echoes back (it would land in logs, proxies and screenshots).
SECRET_FIELDS = frozenset(
    {"password", "token", "ticket", "oauth_token", "access_token", "refresh_token", "secret", "authorization"}
)
REDACTED = "[redacted]"


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED if str(key).lower() in SECRET_FIELDS else _without_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_without_secrets(item) for item in value]
    return value


def _redacted(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error without any secret input: none for a secret field's own error, and
    secret members masked where the input is a whole object (a body that is not what it should be)."""
    if "input" not in error:
        return error
    loc = tuple(error.get("loc", ()))
    if any(str(part).lower() in SECRET_FIELDS for part in loc):
        return {key: item for key, item in error.items() if key not in ("input", "ctx")}
    if loc == ("body",) and not isinstance(error["input"], dict):
        # A whole body that is not an object (a bare string, a list): nothing names its members,
        # so any of them could be the password. Not echoed.
        return {key: item for key, item in error.items() if key not in ("input", "ctx")}
    return {**error, "input": _shortened(_without_secrets(error["input"]))}


# A 422 quotes at most this much of any string it echoes (a file sent as a form field was echoed
# whole: megabytes back for a mistaken upload).
ECHO_MAX_CHARS = 256


def _shortened(value: Any) -> Any:
    if isinstance(value, str) and len(value) > ECHO_MAX_CHARS:
        return value[:ECHO_MAX_CHARS] + "…"
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    return value


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_redacted(error) if isinstance(error, dict) else error for error in exc.errors()]
    return JSONResponse(
        {"detail": _printable(jsonable_encoder(errors)), "code": VALIDATION_ERROR_CODE},
        status_code=422,
    )


class AnswerUnexpectedErrors:
    """An exception no handler took becomes the JSON 500 here, and the connection stays open.

    Starlette's outermost middleware answers such an exception with the handler installed for
    `Exception` and then raises it again, and uvicorn closes a connection whose application
    raised. nginx has by then read the whole 500 and put that upstream connection back in its
    keep-alive pool: the next request it sends there meets a reset, and a POST is not retried (a
    503 for a request that did nothing wrong). Installed inside the access log and metrics, so
    both see the 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: ASGIMessage) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise  # part of an answer is out: only closing the connection can say it failed
            response = await _unexpected_error_handler(Request(scope), exc)
            await response(scope, receive, send)


def check_before_validation_errors(app: FastAPI, check: Callable[[Request], Awaitable[None]]) -> None:
    """Runs `check` on a request the framework refused with a 422 before answering it; an AppError
    the check raises (a 429) is the answer instead."""

    async def handler(request: Request, exc: Exception) -> Response:
        try:
            await check(request)
        except AppError as error:
            return await _app_error_handler(request, error)
        return await _validation_error_handler(request, exc)

    app.add_exception_handler(RequestValidationError, handler)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    for kind in OUTAGE_CANDIDATES:
        app.add_exception_handler(kind, _outage_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
