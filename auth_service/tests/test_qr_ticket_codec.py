"""The QR ticket's sealing: what decodes and what does not (no database needed)."""

import base64
import time
import uuid

import pytest

from auth_service.qr.tickets import TicketClaims, TicketCodec
from common.rules import MAX_TICKET_LENGTH

SECRET = "a-random-url-safe-secret-for-tests-only-0123456789"


def claims(expires_in: int = 120) -> TicketClaims:
    return TicketClaims(uuid.uuid4(), 4242, int(time.time()) + expires_in)


def test_round_trip_and_fresh_nonce() -> None:
    codec = TicketCodec(SECRET)
    original = claims()
    first, second = codec.encode(original), codec.encode(original)
    assert first != second
    assert codec.decode(first) == original
    assert codec.decode(second) == original
    assert len(first) <= MAX_TICKET_LENGTH
    assert set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_every_flipped_byte_is_refused() -> None:
    codec = TicketCodec(SECRET)
    ticket = codec.encode(claims())
    raw = bytearray(base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4)))
    for index in range(len(raw)):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        encoded = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
        assert codec.decode(encoded) is None, index


def test_expired_other_key_and_garbage_are_refused() -> None:
    codec = TicketCodec(SECRET)
    assert codec.decode(codec.encode(claims(expires_in=-1))) is None
    ticket = codec.encode(claims(expires_in=60))
    assert codec.decode(ticket, now=time.time() + 61) is None
    assert TicketCodec(SECRET + "x").decode(ticket) is None
    for garbage in (
        "",
        "garbage",
        "!!!!",
        "é" * 40,
        "A" * (MAX_TICKET_LENGTH + 1),
        ticket[:20],
        ticket + "AAAA",
    ):
        assert codec.decode(garbage) is None, garbage


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        TicketCodec("short")
