"""The FastAPI shell every service shares: docs under its own prefix, /healthz, errors, logs."""

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware import Middleware

from common.boundary import TrustBoundary
from common.errors import install_error_handlers
from common.health import Readiness
from common.logs import AccessLogMiddleware
from common.metrics import MetricsMiddleware, metrics_response
from common.settings import BaseServiceSettings
from common.surrogates import RejectUnpairedSurrogates

# The lifespan yields the typed state every request sees as `request.state` (see common.state).
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any]]]


def _moved_to(path: str) -> Callable[[], Any]:
    async def moved() -> JSONResponse:
        return JSONResponse(
            {"detail": f"Moved to {path}", "code": "moved"}, status_code=308, headers={"Location": path}
        )

    return moved


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
) -> FastAPI:
    """`prefix` is the path nginx routes to the service (e.g. "/users"); docs live beneath it.
    `settings` give the trust boundary's secrets; `middleware` runs inside the boundary (a fast
    path answered below the framework must not answer a caller the boundary refuses)."""
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        docs_url=f"{prefix}/docs",
        redoc_url=f"{prefix}/redoc",
        openapi_url=f"{prefix}/openapi.json",
    )
    install_error_handlers(app)
    app.add_middleware(RejectUnpairedSurrogates)
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
    return app
