"""A hub's client_id is a bearer secret for the hub's lifetime (whoever knows it can join), so it
is kept out of the logs: uvicorn logs each websocket's path with its query string."""

import logging
import re

_CLIENT_ID = re.compile(r"(client_id=)[^&\s\"]*")


class RedactClientId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _CLIENT_ID.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str) and "client_id=" in record.msg:
            record.msg = _CLIENT_ID.sub(r"\1***", record.msg)
        return True


def redact_client_ids() -> None:
    for name in ("uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactClientId) for existing in logger.filters):
            logger.addFilter(RedactClientId())


def hub_label(client_id: str) -> str:
    """Enough of a client_id to follow one hub through the logs, not enough to join it."""
    return client_id[:4] + "…"
