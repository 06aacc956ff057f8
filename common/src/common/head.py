"""HEAD wherever GET is (RFC 9110), except on the few GET routes that change something."""

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send


class HeadAsGet:
    """HEAD is answered wherever GET is (RFC 9110: a server supports both), with GET's status and
    headers and no body: the routes see a GET, and uvicorn, which still holds the request as a
    HEAD, writes no body. Routes declare GET only.

    `refused` are the paths (head_refused: either spelling) of GET routes that change something (minting a QR
    ticket, spending one): a HEAD there stays a HEAD, which they do not answer (405). A link
    checker or a prefetch would otherwise mint tickets against the caller's cap, or spend the
    one a browser is waiting for."""

    def __init__(self, app: ASGIApp, refused: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.refused = refused  # head_refused(paths), also the app's state for its 405s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD" and not refuses_head(self.refused, scope):
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def head_refused(paths: Collection[str]) -> frozenset[str]:
    return frozenset(path.rstrip("/") for path in paths)


def refuses_head(refused: frozenset[str], scope: Scope) -> bool:
    return bool(refused) and str(scope["path"]).rstrip("/") in refused
