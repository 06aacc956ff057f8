"""uvicorn's HTTP protocol (httptools) as every service runs it: `--http common.serving:HttpProtocol`.

Two changes to how an answer leaves the process, both about an instance that stops or dies while
nginx talks to it, and one to what it answers to bytes that are not HTTP it can parse (JSON, as
every other error, instead of uvicorn's plain text).

**One write per answer.** uvicorn writes an answer's head (status line and headers) when the app
sends `http.response.start`, and its body in a second write. An instance killed between the two
has sent a head that nginx has already passed on to the client; nginx can then only cut the answer
(`upstream prematurely closed connection while reading upstream`), even for a GET it would
otherwise have retried on another instance. Here the head is held back and leaves with the body's
first write, in one `send()`: an instance that dies before it has sent nothing, and nginx retries
an idempotent request elsewhere. An answer whose body is written in one piece (every JSON answer
of these services) reaches nginx whole or not at all. It also saves a system call per answer.

**A stop that no client of nginx can notice.** On SIGTERM uvicorn stops listening (nginx's next
connection is refused and goes to another instance, safely, even for a POST), lets in-flight
requests finish and answer with `Connection: close`, and closes idle keep-alive connections at
once. That last step races with nginx: a request nginx has just written down an idle connection
is lost with it, and nginx never resends a POST that reached an instance. Here an idle connection
is left open instead; a request that still arrives on it is served and answered with
`Connection: close`, and nginx closes the idle ones itself after its upstream keepalive_timeout
(4 s, below uvicorn's 5 s keep-alive), well within the graceful shutdown timeout the stack gives
uvicorn.
"""

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent  # the cycle's own type for what it sends


class _HeadWithBody:
    """The transport as one answer's cycle sees it: while `holding`, the next write (the head) is
    kept, and it goes out in front of the write after it."""

    __slots__ = ("held", "holding", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.holding = False
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.holding:
            self.held, self.holding = data, False
            return
        if self.held is not None:
            data, self.held = self.held + data, None
        self.transport.write(data)

    def flush(self) -> None:
        if self.held is not None:
            data, self.held = self.held, None
            self.transport.write(data)

    def __getattr__(self, name: str) -> Any:  # close, is_closing, get_extra_info...
        return getattr(self.transport, name)


def _write_head_with_body(cycle: RequestResponseCycle) -> None:
    transport = _HeadWithBody(cycle.transport)
    cycle.transport = transport  # type: ignore[assignment]
    send = cycle.send

    async def send_in_one_write(message: "ASGISendEvent") -> None:
        if message["type"] == "http.response.start":
            transport.holding = True
            try:
                await send(message)
            finally:
                transport.holding = False
            return
        await send(message)
        if cycle.response_complete:
            transport.flush()  # an answer without a body write (HEAD): the head alone

    cycle.send = send_in_one_write  # type: ignore[method-assign]


# What uvicorn answers, as text, to bytes it cannot parse as HTTP (an unknown method such as
# `BREW`, which nginx passes on): the same JSON as nginx's own 400 (API.md, errors). The request
# could not be read, so its Accept-Language cannot be either: English.
BAD_REQUEST_BODY = b'{"detail":"Bad request","code":"bad_request"}'


class HttpProtocol(HttpToolsProtocol):
    draining = False

    def send_400_response(self, msg: str) -> None:
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(BAD_REQUEST_BODY),
                b"connection: close\r\n\r\n",
                BAD_REQUEST_BODY,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.draining = True  # closed by nginx, by the keep-alive timeout, or after one more answer
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is None or self.cycle is before:
            return  # a websocket upgrade: the websocket protocol takes the connection over
        # The cycle's task was created above, and runs on a later turn of the loop.
        _write_head_with_body(self.cycle)
        if self.draining:
            self.cycle.keep_alive = False
