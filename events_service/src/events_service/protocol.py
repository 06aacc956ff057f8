"""The gateway's wire protocol (API.md 20): opcodes, close codes, frames. No I/O here."""

from enum import IntEnum
from typing import Any

import orjson


class Op(IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    RESUME = 6
    RECONNECT = 7
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


# What a client may send; the other known opcodes are the server's.
CLIENT_OPS = frozenset({Op.HEARTBEAT, Op.IDENTIFY, Op.RESUME})
KNOWN_OPS = frozenset(int(op) for op in Op)


class CloseCode(IntEnum):
    # Not in API.md: a slow consumer, an instance that lost its place. The session can resume.
    UNKNOWN_ERROR = 4000
    UNKNOWN_OPCODE = 4001
    DECODE_ERROR = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    INVALID_SEQ = 4007
    RATE_LIMITED = 4008
    SESSION_TIMED_OUT = 4009


class ProtocolViolation(Exception):
    """The connection ends with `code` (its reason goes in the close frame)."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_frame(text: str) -> tuple[int, Any]:
    """(op, d) of a client frame: a JSON object whose `op` is an integer; `d` may be absent."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolViolation(CloseCode.DECODE_ERROR, "not JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolViolation(CloseCode.DECODE_ERROR, "not a frame")
    op = frame.get("op")
    if not isinstance(op, int) or isinstance(op, bool):
        raise ProtocolViolation(CloseCode.DECODE_ERROR, "not a frame")
    return op, frame.get("d")


def encode(op: Op, d: Any = None) -> str:
    """A frame that is not a dispatch (s and t are null)."""
    return orjson.dumps({"op": int(op), "d": d, "s": None, "t": None}).decode()


def dispatch_prefix(kind: str, d_json: str) -> str:
    """A dispatch frame up to its sequence number; the session appends `<s>}` when it sends it,
    so an event is serialised once however many sessions receive it."""
    return '{"op":0,"t":"' + kind + '","d":' + d_json + ',"s":'


HEARTBEAT_ACK = encode(Op.HEARTBEAT_ACK)
RECONNECT = encode(Op.RECONNECT)
INVALID_SESSION = encode(Op.INVALID_SESSION, False)


def hello(heartbeat_interval_ms: int) -> str:
    return encode(Op.HELLO, {"heartbeat_interval": heartbeat_interval_ms})


class FrameRate:
    """At most `limit` frames per fixed window that starts with the first frame after the last
    window ended (Discord's gateway counts the same way)."""

    __slots__ = ("count", "limit", "started", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.started = -1e18
        self.count = 0

    def allow(self, now: float) -> bool:
        if now - self.started >= self.window:
            self.started = now
            self.count = 0
        self.count += 1
        return self.count <= self.limit


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
