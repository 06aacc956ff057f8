"""A small stand-in for the Yandex ID API (`GET /info?format=json`), run by the tests on a local port.

Each token is told how to answer: a profile, an HTTP error, a reply slower than the auth
service's timeout, a body that is not the expected JSON, or a dropped connection. The server
checks that it is asked the way Yandex wants (`Authorization: OAuth <token>`, `format=json`).
"""

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLIENT_ID = "test-yandex-client-id"
REDIRECT_URI = "https://chat.example/yandex-callback"
# The auth service's Yandex timeout in the tests; a "slow" reply waits longer than this.
TIMEOUT_SECONDS = 2.0
# How long a held reply waits for its partners: well inside the auth service's timeout, so a
# partner that comes late (a loaded machine, a Retry-After) never turns the first into a 502.
HOLD_SECONDS = TIMEOUT_SECONDS / 2


class Pairing:
    """Requests held until `parties` of them are being served at once (see hold_together)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self._barrier = threading.Barrier(parties)
        self._lock = threading.Lock()
        self.met = 0  # requests that were answered together with all their partners
        self.alone = 0  # requests answered without them (a partner came late or never)

    @property
    def held(self) -> bool:
        """True when every party was in flight at the same moment."""
        return self.met == self.parties

    def wait(self) -> bool:
        try:
            self._barrier.wait(timeout=HOLD_SECONDS)
        except threading.BrokenBarrierError:
            with self._lock:
                self.alone += 1
            return False
        with self._lock:
            self.met += 1
        return True


@dataclass
class Reply:
    """How the fake answers one token."""

    profile: dict[str, Any] | None = None
    status: int = 200
    body: bytes | None = None  # raw body, sent as is (junk, wrong shapes)
    delay: float = 0.0  # seconds to wait before answering (past the client timeout: a time-out)
    drop: bool = False  # close the connection without answering
    # Set by FakeYandex.hold_together: the reply waits until the other requests are in flight too.
    pairing: Pairing | None = field(default=None, repr=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # Kept so that stop() can cut them: shutdown() only stops accepting, and a keep-alive
        # connection's thread would go on answering the auth service's pooled connection.
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def cut_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up mid-reply (the time-out cases) is expected here, not an error.
        pass


class FakeYandex:
    Reply = Reply

    def __init__(self) -> None:
        self._replies: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.requests: list[tuple[str, str | None]] = []  # (path with query, Authorization)
        self.client_id = CLIENT_ID
        self.redirect_uri = REDIRECT_URI
        self.timeout_seconds = TIMEOUT_SECONDS
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stack_env(self) -> dict[str, str]:
        """What the stack's auth service needs to use this server instead of Yandex."""
        return {
            "YANDEX_LOGIN_URL": self.url,
            "AUTH_YANDEX_CLIENT_ID": CLIENT_ID,
            "AUTH_YANDEX_REDIRECT_URI": REDIRECT_URI,
            "AUTH_YANDEX_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        }

    def reply(self, token: str, reply: Reply) -> None:
        with self._lock:
            self._replies[token] = reply

    def hold_together(self, tokens: list[str], parties: int) -> Pairing:
        """Answer none of these tokens until `parties` requests for them are being served at once,
        so concurrent requests reach the auth service's writes together. A partner later than
        HOLD_SECONDS breaks the pairing and every reply goes out at once (still in time for the
        auth service); the returned Pairing tells whether they really met, so a test can try
        again rather than fail on the machine's timing."""
        pairing = Pairing(parties)
        with self._lock:
            for token in tokens:
                self._replies[token].pairing = pairing
        return pairing

    def profile(self, token: str, **fields: Any) -> dict[str, Any]:
        """Serve a profile (issued to our client id unless told otherwise) for the token."""
        profile = {"client_id": CLIENT_ID, "psuid": "x", **fields}
        self.reply(token, Reply(profile=profile))
        return profile

    def start(self) -> None:
        self._released.clear()
        server = _Server(("127.0.0.1", self.port), self._handler())
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="fake-yandex", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.cut_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @contextmanager
    def offline(self) -> Iterator[None]:
        """Nothing listens on the port for the duration (connection refused), then it comes back."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _lookup(self, token: str) -> Reply | None:
        with self._lock:
            return self._replies.get(token)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without this, Nagle plus delayed ACKs
            # add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization")
                fake.requests.append((self.path, authorization))
                url = urlsplit(self.path)
                if url.path != "/info" or parse_qs(url.query).get("format") != ["json"]:
                    self._send(400, b'{"error": "bad request"}')
                    return
                scheme, _, token = (authorization or "").partition(" ")
                reply = fake._lookup(token) if scheme == "OAuth" else None
                if reply is None:
                    # What Yandex says for an unknown, expired or revoked token.
                    self._send(401, b"invalid token", "text/plain")
                    return
                if reply.pairing is not None:
                    reply.pairing.wait()
                if reply.delay:
                    fake._released.wait(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.body is not None:
                    self._send(reply.status, reply.body)
                elif reply.profile is not None:
                    self._send(reply.status, json.dumps(reply.profile).encode())
                else:
                    self._send(reply.status, b"{}")

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    # The client gave up (it timed out): nothing to answer.
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
