"""The wire protocol's pure parts, and the settings' defaults against API.md 20."""

import json

import pytest

from events_service.gateway import entry_before
from events_service.protocol import CloseCode, FrameRate, ProtocolViolation, dispatch_prefix, parse_frame
from events_service.settings import EventsSettings


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"op": 1}', (1, None)), ('{"op": 2, "d": {"token": "t"}, "s": 5, "x": 1}', (2, {"token": "t"}))],
)
def test_frames_parse(text: str, expected: tuple[int, object]) -> None:
    assert parse_frame(text) == expected


@pytest.mark.parametrize(
    "text", ["", "nope", "[]", "1", '{"d": 1}', '{"op": "1"}', '{"op": 1.0}', '{"op": false}']
)
def test_non_frames_are_decode_errors(text: str) -> None:
    with pytest.raises(ProtocolViolation) as raised:
        parse_frame(text)
    assert raised.value.code == CloseCode.DECODE_ERROR


def test_a_dispatch_is_serialised_once_and_numbered_per_session() -> None:
    prefix = dispatch_prefix("MESSAGE_CREATE", '{"id":1}')
    assert json.loads(prefix + "7}") == {"op": 0, "t": "MESSAGE_CREATE", "d": {"id": 1}, "s": 7}


def test_frame_rate_is_a_fixed_window() -> None:
    rate = FrameRate(3, 60.0)
    assert [rate.allow(t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert rate.allow(60.0)  # a new window


def test_entry_before_is_just_below() -> None:
    assert entry_before("1700000000000-3") == "1700000000000-2"
    assert entry_before("1700000000000-0") == "1699999999999-18446744073709551615"


def test_defaults_are_the_contract() -> None:
    settings = EventsSettings(EVENTS_JWT_PUBLIC_KEY="x")
    assert settings.identify_timeout_seconds == 10
    assert settings.resume_window_seconds == 120
    assert (settings.rate_limit_frames, settings.rate_limit_window_seconds) == (120, 60)
    assert settings.heartbeat_interval_ms == 41_250
    assert settings.retention_ms > settings.resume_window_seconds * 1000
