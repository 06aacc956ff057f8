"""common.serving's protocol in a real uvicorn process, read from a raw socket: an answer's head
leaves with its body, so an instance killed in between has sent nothing nginx could have passed on."""

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = textwrap.dedent(
    """
    import os, signal

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/whole":
            body = b'{"ok": true}'
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        elif path == "/head-then-die":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"100")]})
            os.kill(os.getpid(), signal.SIGKILL)
        elif path == "/head-then-fail":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"100")]})
            raise RuntimeError("failed after the head")
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one ", b"", b"two"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(tmp_path: Path, protocol: str) -> tuple[subprocess.Popen[bytes], int]:
    (tmp_path / "serving_app.py").write_text(APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving_app:app", "--port", str(port), "--http", protocol,
         "--loop", "uvloop", "--no-access-log", "--log-level", "critical"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            assert process.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    process, port = serve(tmp_path, getattr(request, "param", "common.serving:HttpProtocol"))
    try:
        yield port
    finally:
        process.kill()
        process.wait()


def exchange(port: int, raw: bytes) -> bytes:
    """Everything the server sends on one connection until it closes it (or goes quiet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        received = b""
        sock.settimeout(1)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def get(path: str, method: str = "GET", close: bool = True) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{connection}\r\n".encode()


def test_an_answer_arrives_whole(server: int) -> None:
    received = exchange(server, get("/whole"))
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b'\r\n\r\n{"ok": true}')


def test_keep_alive_carries_several_answers(server: int) -> None:
    received = exchange(server, get("/whole", close=False) + get("/whole", close=False) + get("/whole"))
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert received.count(b'{"ok": true}') == 3


def test_a_head_answer_still_sends_its_head(server: int) -> None:
    received = exchange(server, get("/whole", method="HEAD", close=False))
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n")
    assert b"content-length: 12" in received.lower()


def test_a_streamed_answer_arrives_in_order(server: int) -> None:
    received = exchange(server, get("/stream"))
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in received.lower()
    assert received.endswith(b"\r\n\r\n4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n")


def test_an_instance_killed_after_starting_its_answer_has_sent_nothing(server: int) -> None:
    # nginx can then retry a GET on another instance instead of cutting an answer it began.
    assert exchange(server, get("/head-then-die")) == b""


def test_an_app_failing_after_starting_its_answer_has_sent_nothing(server: int) -> None:
    assert exchange(server, get("/head-then-fail")) == b""
    # The server goes on serving.
    assert exchange(server, get("/whole")).endswith(b'{"ok": true}')


@pytest.mark.parametrize("server", ["httptools"], indirect=True)
def test_plain_uvicorn_sends_the_head_of_an_answer_it_never_finishes(server: int) -> None:
    """What the protocol is for: uvicorn's own writes the head at once."""
    assert exchange(server, get("/head-then-die")).startswith(b"HTTP/1.1 200 OK\r\n")


UNPARSABLE = [b"BREW /whole HTTP/1.1\r\nHost: test\r\n\r\n", b"GET /whole HTTP/1.1\r\nHost\r\n\r\n"]


@pytest.mark.parametrize("raw", UNPARSABLE)
def test_a_request_that_cannot_be_parsed_is_answered_with_json(server: int, raw: bytes) -> None:
    received = exchange(server, raw)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), received
    assert b"\r\ncontent-type: application/json\r\n" in head
    assert json.loads(body) == {"detail": "Bad request", "code": "bad_request"}


@pytest.mark.parametrize("server", ["httptools"], indirect=True)
def test_plain_uvicorn_answers_an_unparsable_request_with_text(server: int) -> None:
    received = exchange(server, b"BREW /whole HTTP/1.1\r\nHost: test\r\n\r\n")
    assert b"content-type: text/plain" in received


def test_the_startup_heap_is_frozen_once_the_app_has_started(tmp_path: Path) -> None:
    """common.app.freeze_startup_heap: after the lifespan's startup, once per process."""
    code = textwrap.dedent(
        """
        import gc
        from contextlib import asynccontextmanager
        from fastapi import Request
        from fastapi.testclient import TestClient
        from common.app import build_app

        @asynccontextmanager
        async def lifespan(app):
            yield {"answer": 42}

        app = build_app(title="t", prefix="/t", lifespan=lifespan)

        @app.get("/t/state")
        async def state(request: Request) -> dict:
            return {"answer": request.state.answer}

        before = gc.get_freeze_count()
        with TestClient(app) as client:
            frozen = gc.get_freeze_count()
            assert client.get("/t/state").json() == {"answer": 42}
        with TestClient(build_app(title="u", prefix="/u")):
            again = gc.get_freeze_count()
        print(before, frozen, again)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, frozen, again = map(int, out.stdout.split())
    assert before == 0
    assert frozen > 10_000  # the modules, the app and its routes
    # A second app in the same process freezes nothing more (frozen objects that die leave).
    assert again <= frozen
