"""The FastAPI shell every service shares: docs under its own prefix, /healthz, errors, logs."""

import gc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.middleware import Middleware
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from common.boundary import TrustBoundary
from common.errors import AnswerUnexpectedErrors, install_error_handlers
from common.head import HeadAsGet, head_refused
from common.health import Readiness
from common.input_guard import RejectUnstorableInput
from common.logs import AccessLogMiddleware
from common.metrics import MetricsMiddleware, metrics_response
from common.settings import BaseServiceSettings

# Where nginx serves the Swagger UI and ReDoc files (web/docs-assets/): no page loads a CDN.
DOCS_ASSETS = "/docs-assets"

# The lifespan yields the typed state every request sees as `request.state` (see common.state).
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any]]]


def _moved_to(path: str) -> Callable[[], Any]:
    async def moved() -> JSONResponse:
        return JSONResponse(
            {"detail": f"Moved to {path}", "code": "moved"}, status_code=308, headers={"Location": path}
        )

    return moved


def freeze_startup_heap() -> None:
    """Once per process, after the first startup: the objects alive then (modules, the app, its
    routes and models, pools) move to the collector's permanent generation. A full collection
    then scans only what was made since, instead of the whole heap again each time requests in
    flight get promoted (bench/README.md, "The collector's startup heap")."""
    if gc.get_freeze_count() == 0:
        gc.collect()  # what startup left behind goes now, not into the permanent generation
        gc.freeze()


def _then_freeze(lifespan: Lifespan | None) -> Lifespan:
    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        if lifespan is None:
            freeze_startup_heap()
            yield {}
            return
        async with lifespan(app) as state:
            freeze_startup_heap()
            yield state

    return run


def build_app(
    *,
    title: str,
    prefix: str,
    lifespan: Lifespan | None = None,
    routers: list[APIRouter] | tuple[APIRouter, ...] = (),
    description: str = "",
    version: str = "0.1.0",
    settings: BaseServiceSettings | None = None,
    middleware: Sequence[Middleware] = (),
    head_refused_paths: Sequence[str] = (),
) -> FastAPI:
    """`prefix` is the path nginx routes to the service (e.g. "/users"); docs live beneath it.
    `settings` give the trust boundary's secrets; `middleware` runs inside the boundary (a fast
    path answered below the framework must not answer a caller the boundary refuses);
    `head_refused_paths` are GET routes that change something, which answer no HEAD."""
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=_then_freeze(lifespan),
        # The docs pages are this module's own: they load their assets from the stack.
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{prefix}/openapi.json",
    )
    openapi_url = f"{prefix}/openapi.json"

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get(f"{prefix}/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    install_error_handlers(app)
    # Innermost: only the routes see a HEAD as the GET it asks about.
    app.state.head_refused = refused = head_refused(head_refused_paths)
    app.add_middleware(HeadAsGet, refused=refused)
    # Added early, so inner: the access log and the metrics see its 500.
    app.add_middleware(AnswerUnexpectedErrors)
    app.add_middleware(RejectUnstorableInput)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(MetricsMiddleware)
    for item in middleware:
        app.add_middleware(item.cls, *item.args, **item.kwargs)
    # Outermost: nothing below it sees a request that did not come through nginx or a service.
    app.add_middleware(
        TrustBoundary,
        edge_secret=settings.edge_secret_value() if settings else None,
        service_secret=settings.service_secret_value() if settings else None,
    )

    # Probes and metrics live outside the service's prefix: nginx never routes them.
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """200 when every dependency answers (the lifespan state's `readiness`), else 503."""
        readiness = getattr(request.state, "readiness", None)
        checks = await readiness.check() if isinstance(readiness, Readiness) else {}
        ready = all(state == "ok" for state in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return metrics_response(request)

    # The docs pages under both spellings: `/auth/docs/` goes to `/auth/docs` with a relative
    # Location (the browser keeps scheme, host and port) and a JSON body, the method kept (308).
    for page in ("docs", "redoc"):
        app.add_api_route(
            f"{prefix}/{page}/",
            _moved_to(f"{prefix}/{page}"),
            methods=["GET", "HEAD"],
            include_in_schema=False,
        )

    for router in routers:
        app.include_router(router)
    _answer_both_spellings(app)
    return app


def _answer_both_spellings(app: FastAPI) -> None:
    """A path asked with or without its trailing slash is served as the route that exists,
    instead of Starlette's bodiless 307 (which a client may follow with another method). Only a
    path that matched nothing pays for the second lookup."""
    router = app.router
    router.redirect_slashes = False
    not_found = router.default

    async def other_spelling(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] in ("http", "websocket") and not scope.get(_RESPELLED) and len(path) > 1:
            other = path[:-1] if path.endswith("/") else path + "/"
            respelled = {**scope, "path": other, "raw_path": other.encode(), _RESPELLED: True}
            if any(route.matches(respelled)[0] != Match.NONE for route in router.routes):
                await router(respelled, receive, send)
                return
        await not_found(scope, receive, send)

    router.default = other_spelling


_RESPELLED = "chat.respelled"
