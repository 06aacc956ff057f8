"""The rate-limit settings (API.md 21): their defaults, their names, `0`, and bad values."""

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from common.ratelimit import Limit, Rate
from private_chat_service.settings import PrivateChatSettings


def test_defaults_are_the_contracts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SEND_RATE_LIMIT", "START_CHAT_RATE_LIMIT"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"PRIVATE_CHAT_{name}", raising=False)
    settings = PrivateChatSettings()
    assert settings.send_limit == Limit("send", Rate(5, 5.0))
    assert settings.start_chat_limit == Limit("start_chat", Rate(10, 60.0))


def test_names_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEND_RATE_LIMIT", "0")
    monkeypatch.setenv("PRIVATE_CHAT_START_CHAT_RATE_LIMIT", "3/1.5")
    settings = PrivateChatSettings()
    assert settings.send_limit is None
    assert settings.start_chat_limit == Limit("start_chat", Rate(3, 1.5))


@pytest.mark.parametrize("value", ["5", "5/0", "0/5", "five/5", "5 per 5"])
def test_a_bad_value_stops_the_service_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="rate limit"):
        PrivateChatSettings(SEND_RATE_LIMIT=value)


async def test_limits_off_add_no_headers(client: httpx.AsyncClient, new_user: Any) -> None:
    alice, bob = await new_user(), await new_user()
    as_alice = {"X-User-Id": str(alice)}
    started = await client.post("/private/start-chat/", json={"recipient_id": bob}, headers=as_alice)
    assert started.status_code == 200
    sends = [
        await client.post(
            f"/private/add-message/{started.json()['chat_id']}/", json={"text": "hi"}, headers=as_alice
        )
        for _ in range(8)
    ]
    assert [s.status_code for s in sends] == [200] * 8
    for response in (started, *sends):
        assert not [name for name in response.headers if name.lower().startswith("x-ratelimit")]
