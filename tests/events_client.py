"""A small client of the event gateway (API.md 20) for the tests: what a real client does, with
the checks of the sequence numbers built in."""

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


@dataclass
class Closed:
    code: int | None
    reason: str


@dataclass
class EventsClient:
    ws: ClientConnection
    hello: dict[str, Any]
    seq: int | None = None
    session_id: str | None = None
    # Every dispatch received, in order (READY and RESUMED included).
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    _heartbeat: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> "EventsClient":
        ws = await websockets.connect(url, open_timeout=30, **kwargs)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert hello["op"] == 10, hello
        return cls(ws, hello)

    async def send(self, op: int, d: Any = None) -> None:
        await self.ws.send(json.dumps({"op": op, "d": d}))

    async def frame(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next frame other than a HEARTBEAT_ACK; dispatches are checked to rise by one."""
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if frame["op"] == 11:
                continue
            if frame["op"] == 0:
                if self.seq is not None:
                    assert frame["s"] == self.seq + 1, (self.seq, frame)
                self.seq = frame["s"]
                self.dispatches.append(frame)
            return frame

    async def dispatch(self, timeout: float = 15.0) -> dict[str, Any]:
        frame = await self.frame(timeout)
        assert frame["op"] == 0, frame
        return frame

    async def identify(self, token: str) -> dict[str, Any]:
        await self.send(2, {"token": token})
        ready = await self.dispatch()
        assert ready["t"] == "READY", ready
        assert ready["s"] == 1, ready
        self.session_id = ready["d"]["session_id"]
        return ready

    async def resume(self, token: str, session_id: str, seq: int) -> list[dict[str, Any]]:
        """The replayed dispatches (RESUMED excluded)."""
        self.seq = seq
        self.session_id = session_id
        await self.send(6, {"token": token, "session_id": session_id, "seq": seq})
        replayed = []
        while True:
            frame = await self.dispatch()
            if frame["t"] == "RESUMED":
                return replayed
            replayed.append(frame)

    def beat(self, every: float) -> None:
        """Heartbeats in the background, as a client keeps them."""

        async def loop() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await asyncio.sleep(every)
                    await self.send(1, self.seq)

        self._heartbeat = asyncio.get_running_loop().create_task(loop())

    async def closed(self, timeout: float = 15.0) -> Closed:
        """Reads until the server closes; its close code and reason."""
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(timeout):
                while True:
                    await self.frame(timeout)
        return Closed(
            self.ws.close_code,
            self.ws.close_reason or "",
        )

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.ws.close()

    async def drop(self) -> None:
        """Go away without a closing handshake (a lost network)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.ws.transport.abort()
        with contextlib.suppress(Exception):
            await self.ws.wait_closed()
