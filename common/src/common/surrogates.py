"""Refuses JSON bodies holding an unpaired UTF-16 surrogate escape (`"\\ud800"`).

JSON allows such escapes, Python decodes them into a `str` that cannot be encoded as UTF-8, and
from there any database write, hash or log line fails with a 500. A valid pair (an emoji written
as `"\\ud83d\\ude00"`) passes. The check costs one byte search for bodies without `\\u`.
"""

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SURROGATE_ESCAPE = re.compile(rb"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")
_MAX_CHECKED_BODY = 1024 * 1024


def has_unpaired_surrogate(body: bytes) -> bool:
    if b"\\u" not in body:
        return False
    pending_high_end = -1
    for match in _SURROGATE_ESCAPE.finditer(body):
        if len(match.group(1)) % 2 == 0:
            continue  # an escaped backslash followed by a literal "u...": plain text
        code = int(match.group(2), 16)
        if code < 0xDC00:  # high surrogate: a low one must follow at once
            if pending_high_end != -1:
                return True
            pending_high_end = match.end()
        else:
            if pending_high_end != match.start() + len(match.group(1)) - 1:
                return True
            pending_high_end = -1
    return pending_high_end != -1


_ERROR = orjson.dumps(
    {
        "detail": [
            {
                "type": "string_unicode",
                "loc": ["body"],
                "msg": "Input should be a valid string: unpaired surrogate escape",
                "input": None,
            }
        ]
    }
)


class RejectUnpairedSurrogates:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
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
        if has_unpaired_surrogate(body):
            await send(
                {
                    "type": "http.response.start",
                    "status": 422,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _ERROR})
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False
