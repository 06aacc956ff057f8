"""One error type that carries a status code and a message key, and the handlers that render it."""

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.i18n import pick_language, translate

logger = logging.getLogger("common.errors")


class AppError(Exception):
    """An expected failure a client caused or can act on; always rendered as a 4xx/5xx JSON body."""

    def __init__(
        self,
        status_code: int,
        message_key: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message_key)
        self.status_code = status_code
        self.message_key = message_key
        self.headers = dict(headers or {})


def not_authenticated() -> AppError:
    return AppError(401, "not_authenticated", headers={"WWW-Authenticate": "Bearer"})


def invalid_token() -> AppError:
    return AppError(401, "invalid_token", headers={"WWW-Authenticate": "Bearer"})


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    language = pick_language(request.headers.get("accept-language"))
    return JSONResponse(
        {"detail": translate(exc.message_key, language)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = translate("not_found", pick_language(request.headers.get("accept-language")))
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    language = pick_language(request.headers.get("accept-language"))
    return JSONResponse({"detail": translate("internal_error", language)}, status_code=500)


def _printable(value: Any) -> Any:
    """The validation list echoes client input; make any str in it encodable as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    return value


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _printable(jsonable_encoder(exc.errors()))}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
