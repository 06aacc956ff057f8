"""422 bodies that survive any input a client can send.

FastAPI echoes the offending input in its validation list; a JSON string with a lone surrogate
(`"\\ud800"`) parses into a Python str that cannot be encoded as UTF-8, and the stock handler
then fails with a 500. This handler renders the same list with such characters escaped.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    return value


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _printable(jsonable_encoder(exc.errors()))}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
