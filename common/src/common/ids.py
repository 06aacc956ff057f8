"""The one rule for an id that arrives as text (a token's `sub`, nginx's X-User-Id)."""

# PostgreSQL bigint: ids past it are refused before they reach a query.
MAX_ID = 2**63 - 1


def parse_id(text: str) -> int | None:
    """A positive id written in ASCII digits only; None for anything else.

    `str.isdigit` and `int()` also accept other scripts' digits ("٢" is 2) and full-width forms:
    an id must have one spelling, or two strings could name the same user.
    """
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def _plain_digits(text: str, *, zero: bool) -> bool:
    """ASCII digits without a leading zero (`zero`: "0" itself allowed)."""
    return text.isascii() and text.isdigit() and (not text.startswith("0") or (zero and text == "0"))


def one_spelling(value: object) -> object:
    """Pydantic's `BeforeValidator` for an id in a path or query: a string must be ASCII digits
    without a sign, spaces, underscores or leading zeros (pydantic would read "+5", " 5", "0_5"
    and "05" all as 5). Numbers pass on to the int check."""
    if isinstance(value, bool):
        raise ValueError("an id must be an integer")
    if isinstance(value, str) and not _plain_digits(value, zero=False):
        raise ValueError("an id is written in ASCII digits, without a sign or leading zeros")
    return value


def json_integer(value: object) -> object:
    """Pydantic's `BeforeValidator` for an id in a JSON body: a JSON integer and nothing else
    (API.md: ids are integers). Pydantic would read "5", "05" and 5.0 as 5, and true as 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("an id must be an integer")
    return value


def plain_count(value: object) -> object:
    """Pydantic's `BeforeValidator` for a count in a query (`limit`, `offset`): ASCII digits
    without a sign, spaces, underscores, a fraction or leading zeros, as for an id, 0 included
    (pydantic would read "+5", "05", "5.0" and "1_0" as numbers)."""
    if isinstance(value, str) and not _plain_digits(value, zero=True):
        raise ValueError("a number is written in ASCII digits, without a sign or leading zeros")
    return value
