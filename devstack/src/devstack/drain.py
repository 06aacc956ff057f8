"""uvicorn's HTTP protocol with a stop that no client of nginx can notice.

On SIGTERM uvicorn stops listening (nginx's next connection is refused and goes to another
instance, safely, even for a POST), lets in-flight requests finish and answer with
`Connection: close`, and closes idle keep-alive connections at once. That last step races with
nginx: a request nginx has just written down an idle connection is lost with it, and nginx never
resends a POST that reached an instance. Here an idle connection is left open instead; a request
that still arrives on it is served and answered with `Connection: close`, and nginx closes the
idle ones itself after its upstream keepalive_timeout (4 s, below uvicorn's 5 s keep-alive), well
within the graceful shutdown timeout devstack gives uvicorn.

devstack passes it as `--http devstack.drain:DrainingHttpToolsProtocol`.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    draining = False

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.draining = True  # closed by nginx, by the keep-alive timeout, or after one more answer
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False
