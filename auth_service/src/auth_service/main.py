from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import httpx
from fastapi import FastAPI

from auth_service.dependencies import State
from auth_service.passwords import Passwords
from auth_service.qr.routes import QR_TICKET_PATHS
from auth_service.qr.routes import internal_router as qr_internal_router
from auth_service.qr.routes import router as qr_router
from auth_service.qr.tickets import build_ticket_service
from auth_service.routes import router
from auth_service.service import AccountService
from auth_service.settings import AuthSettings
from auth_service.tokens import TokenIssuer, load_private_key
from auth_service.users_client import UsersClient
from auth_service.yandex.client import yandex_http_client
from auth_service.yandex.routes import router as yandex_router
from auth_service.yandex.service import build_yandex_auth
from common.app import build_app
from common.boundary import service_headers
from common.db import make_engine
from common.health import Readiness, engine_check
from common.logs import configure_logging
from common.metrics import sampling_pool, sqlalchemy_pool_stats
from common.periodic import run_periodically
from common.tokens import TOKEN_LEEWAY_SECONDS


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()
    configure_logging("auth", settings.log_level, settings.log_format)
    private_key = load_private_key(settings.private_key_pem())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            application_name="auth",
            connect_timeout=settings.db_connect_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
        )
        timeout = httpx.Timeout(settings.internal_timeout_seconds)
        yandex_http = yandex_http_client(settings)
        async with httpx.AsyncClient(
            base_url=settings.users_service_url,
            timeout=timeout,
            headers=service_headers(settings.service_secret_value()),
        ) as users_http:
            accounts = AccountService(
                engine=engine,
                passwords=Passwords(
                    time_cost=settings.argon2_time_cost,
                    memory_kib=settings.argon2_memory_kib,
                    parallelism=settings.argon2_parallelism,
                    concurrency=settings.hashing_concurrency,
                ),
                issuer=TokenIssuer(
                    private_key,
                    issuer=settings.token_issuer,
                    audience=settings.token_audience,
                    ttl=settings.token_ttl_seconds,
                ),
                users=UsersClient(users_http),
                pending_timeout=timedelta(seconds=settings.pending_registration_timeout_seconds),
                login_max_failures=settings.login_max_failures,
                login_failure_window=timedelta(seconds=settings.login_failure_window_seconds),
                # A token lives token_ttl (plus the verifiers' leeway); a ticket it minted a
                # ticket lifetime more. A minute on top.
                cutoff_retention=timedelta(
                    seconds=settings.token_ttl_seconds + settings.qr_ticket_ttl + TOKEN_LEEWAY_SECONDS + 60
                ),
            )
            tickets = build_ticket_service(settings, engine, accounts.issuer)
            async with anyio.create_task_group() as tasks, sampling_pool(sqlalchemy_pool_stats(engine)):
                interval = settings.housekeeping_interval_seconds
                tasks.start_soon(run_periodically, accounts.housekeeping, interval, "housekeeping")
                tasks.start_soon(run_periodically, tickets.housekeeping, interval, "QR ticket housekeeping")
                yield {
                    "accounts": accounts,
                    "yandex": build_yandex_auth(settings, accounts, yandex_http),
                    "tickets": tickets,
                    "readiness": Readiness(database=engine_check(engine)),
                }
                tasks.cancel_scope.cancel()
        await yandex_http.aclose()
        await engine.dispose()

    return build_app(
        title="Auth service",
        prefix="/auth",
        description="Registration, log-in, access tokens, Yandex ID and QR tickets.",
        lifespan=lifespan,
        settings=settings,
        routers=[router, qr_router, qr_internal_router, yandex_router],
        # Minting a QR ticket and spending one: never for a HEAD (common.head).
        head_refused_paths=QR_TICKET_PATHS,
    )
