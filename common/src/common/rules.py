"""Rules more than one service enforces, defined once (each service imports them from here)."""

import re

# Usernames: 2–32 characters of a-z 0-9 _ . after lower-casing (API.md 4). The users table's
# check constraint holds the same rule in SQL.
USERNAME_MIN_LENGTH = 2
USERNAME_MAX_LENGTH = 32
USERNAME_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")
USERNAME_PATTERN = rf"^[a-z0-9_.]{{{USERNAME_MIN_LENGTH},{USERNAME_MAX_LENGTH}}}$"
USERNAME_RE = re.compile(USERNAME_PATTERN)

# A QR hub's client_id (API.md 13): 16–128 characters of A-Za-z0-9_- (the browser makes it).
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"
CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)
CLIENT_ID_MAX_LENGTH = 128

# A QR ticket is ~90 characters; anything longer is not one of ours and is never decoded.
MAX_TICKET_LENGTH = 256


def normalise_username(value: str) -> str:
    """The username as stored (`Bob` registers as `bob`); ValueError when it breaks the rule."""
    value = value.lower()
    if not USERNAME_RE.fullmatch(value):
        limits = f"{USERNAME_MIN_LENGTH}-{USERNAME_MAX_LENGTH}"
        raise ValueError(f"username must be {limits} characters of a-z, 0-9, '_' and '.'")
    return value
