"""Refuses JSON bodies holding an unpaired UTF-16 surrogate escape (`"\\ud800"`).

JSON allows such escapes, Python decodes them into a `str` that cannot be encoded as UTF-8, and
from there any database write, hash or log line fails with a 500. A valid pair (an emoji written
as `"\\ud83d\\ude00"`) passes. The check costs one byte search for bodies without `\\u`.
`common.input_guard` applies it to every JSON body.
"""

import re

_SURROGATE_ESCAPE = re.compile(rb"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")


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
