"""Refuses, with a 422, client input that no handler should ever see because it cannot be stored
or rendered:

- an unpaired UTF-16 surrogate escape (`"\\ud800"`) in a JSON body: Python decodes it into a `str`
  that cannot be encoded as UTF-8, so any database write, hash or log line would fail;
- a NUL character (`"\\u0000"` in a JSON body, `%00` in the query string): PostgreSQL's text
  types cannot hold it, so the write would fail with a 500;
- a query string whose escapes are not UTF-8 (`%FF`): the framework reads each such byte as
  U+FFFD, so a search for it answered `200 []` as if the client had asked for that character;
- a non-finite number in a JSON body (`NaN`, `Infinity`, `-Infinity`, or `1e999`, which
  overflows to infinity): not JSON, yet Python's parser accepts it, and the 422 that echoes it
  could not be rendered.

One guard in front of every service, so no field of any route (present or future) needs its own
check. Bodies without a hint of these cost a few byte searches; only those with one are parsed.

It also reads a query parameter without a value (`?limit=&offset=`, API.md's own notation, and
what a client building URLs from unset variables sends) as a parameter not given: its default,
or the 422 of a missing one, instead of a 422 for an empty number.
"""

import json
import re
from typing import Any, NoReturn
from urllib.parse import unquote_to_bytes

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.surrogates import has_unpaired_surrogate

_NUL_ESCAPE = re.compile(rb"(\\+)u0000")
# Where a non-finite number could hide: the two constants, or an exponent (1e999).
_NON_FINITE_HINT = re.compile(rb"NaN|Infinity|[0-9][eE]")
_MAX_CHECKED_BODY = 1024 * 1024


def has_nul_escape(body: bytes) -> bool:
    """A `\\u0000` escape in JSON text (an escaped backslash followed by "u0000" is plain text).
    A raw NUL byte is not valid JSON, and the framework's parser refuses it by itself."""
    if b"u0000" not in body:
        return False
    return any(len(match.group(1)) % 2 == 1 for match in _NUL_ESCAPE.finditer(body))


class _NonFinite(Exception):
    pass


def _refuse_constant(_: str) -> NoReturn:
    raise _NonFinite


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NonFinite
    return value


def has_non_finite_number(body: bytes) -> bool:
    """True when the body parses (as the framework parses it) to a NaN or an infinity."""
    if not _NON_FINITE_HINT.search(body):
        return False
    try:
        json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite:
        return True
    except (ValueError, RecursionError):
        return False  # not JSON at all: the framework answers that itself
    return False


# A parameter with nothing after its name, or after its `=`.
_EMPTY_VALUE = re.compile(rb"(?:^|&)[^=&]*=?(?:&|$)")


def without_empty_values(query: bytes) -> bytes | None:
    """The query string without its parameters that have no value; None when it has none."""
    if not query or _EMPTY_VALUE.search(query) is None:
        return None
    return b"&".join(part for part in query.split(b"&") if part.partition(b"=")[2])


def query_has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return b"%00" in query or b"\x00" in query or "\x00" in scope.get("path", "")


def query_not_utf8(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    if b"%" not in query and query.isascii():
        return False
    try:
        unquote_to_bytes(query.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _error(kind: str, location: str, message: str) -> bytes:
    problem: dict[str, Any] = {"type": kind, "loc": [location], "msg": message, "input": None}
    return orjson.dumps({"detail": [problem], "code": "validation_error"})


_SURROGATE = _error("string_unicode", "body", "Input should be a valid string: unpaired surrogate escape")
_NUL_IN_BODY = _error("string_nul", "body", "Input should be a string without NUL characters")
_NUL_IN_QUERY = _error("string_nul", "query", "Input should be a string without NUL characters")
_QUERY_NOT_UTF8 = _error("string_unicode", "query", "Input should be a valid string: escapes are not UTF-8")
_NON_FINITE = _error("finite_number", "body", "Input should be a finite number (no NaN or Infinity)")


def check_body(body: bytes) -> bytes | None:
    """The 422 body for a JSON request body that must be refused; None when it may pass."""
    if has_unpaired_surrogate(body):
        return _SURROGATE
    if has_nul_escape(body):
        return _NUL_IN_BODY
    if has_non_finite_number(body):
        return _NON_FINITE
    return None


class RejectUnstorableInput:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if query_has_nul(scope):
            await _refuse(send, _NUL_IN_QUERY)
            return
        if query_not_utf8(scope):
            await _refuse(send, _QUERY_NOT_UTF8)
            return
        query = without_empty_values(scope.get("query_string", b""))
        if query is not None:
            scope = {**scope, "query_string": query}
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > _MAX_CHECKED_BODY:
                break
        refusal = check_body(body)
        if refusal is not None:
            await _refuse(send, refusal)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False
