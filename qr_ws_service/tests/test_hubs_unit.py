"""Hub bookkeeping and the per-connection rate limit, without sockets."""

from typing import Any, cast

from starlette.websockets import WebSocket

from qr_ws_service.hubs import Client, Hub, HubRegistry, Refusal, TokenBucket


def client() -> Client:
    return Client(cast(WebSocket, object()))


async def test_two_clients_per_hub_and_freed_when_empty() -> None:
    registry = HubRegistry(ttl=60, max_hubs=10)
    browser, phone, third = client(), client(), client()
    hub = registry.join("c" * 16, browser)
    assert isinstance(hub, Hub)
    assert registry.join("c" * 16, phone) is hub
    assert registry.join("c" * 16, third) is Refusal.FULL
    assert registry.stats() == {"hubs": 1, "clients": 2}
    registry.leave(hub, browser)
    assert registry.stats() == {"hubs": 1, "clients": 1}
    registry.leave(hub, phone)
    assert registry.stats() == {"hubs": 0, "clients": 0}
    # Leaving twice, or leaving a hub that was replaced, frees nothing else.
    again = registry.join("c" * 16, third)
    assert isinstance(again, Hub)
    registry.leave(hub, phone)
    assert registry.hubs["c" * 16] is again


async def test_too_many_hubs_is_busy() -> None:
    registry = HubRegistry(ttl=60, max_hubs=2)
    assert isinstance(registry.join("a" * 16, client()), Hub)
    assert isinstance(registry.join("b" * 16, client()), Hub)
    assert registry.join("d" * 16, client()) is Refusal.BUSY


async def test_a_finished_hub_takes_nobody_new() -> None:
    registry = HubRegistry(ttl=60, max_hubs=2)
    hub = registry.join("a" * 16, client())
    assert isinstance(hub, Hub)
    sent: list[Any] = []

    class Socket:
        async def send_text(self, text: str) -> None:
            sent.append(text)

        async def close(self, code: int, reason: str) -> None:
            sent.append(code)

    hub.clients[0].websocket = cast(WebSocket, Socket())
    await hub.finish({"op": "timeout"})
    await hub.finish({"op": "timeout"})
    assert sent == ['{"op":"timeout"}', 1000]
    assert registry.join("a" * 16, client()) is Refusal.FULL


async def test_token_bucket_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=0.001, burst=5)
    assert [bucket.take() for _ in range(7)] == [True] * 5 + [False] * 2


def test_a_quiet_client_outlives_its_hub_by_default() -> None:
    """Heartbeats are a check a client may run (API.md 13): with the default settings a client
    that sends nothing is not dropped before its hub's lifetime ends with {"op": "timeout"}."""
    from qr_ws_service.settings import QrWsSettings

    settings = QrWsSettings()
    assert settings.heartbeat_timeout > settings.hub_ttl
