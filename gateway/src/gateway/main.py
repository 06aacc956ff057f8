from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from common.app import build_app
from common.db import make_engine
from common.errors import invalid_token
from common.logs import configure_logging
from common.tokens import TokenVerifier, load_public_key, token_from_authorization
from gateway.settings import GatewaySettings

IS_REVOKED = text("SELECT 1 FROM auth.revoked_access_tokens WHERE jti = :jti")

router = APIRouter(prefix="/gateway", tags=["gateway"])


class TokenOwner(BaseModel):
    user_id: int


@router.get(
    "/get-token/",
    response_model=TokenOwner,
    responses={401: {"description": "missing, malformed, forged, expired or revoked token"}},
)
async def get_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
    """nginx's auth_request target: 200 with X-User-Id for a good token, else 401."""
    verifier: TokenVerifier = request.app.state.verifier
    claims = verifier.verify(token_from_authorization(authorization))
    if request.app.state.settings.check_revocation:
        async with request.app.state.engine.connect() as conn:
            if (await conn.execute(IS_REVOKED, {"jti": claims.jti})).first() is not None:
                raise invalid_token()
    return JSONResponse({"user_id": claims.user_id}, headers={"X-User-Id": str(claims.user_id)})


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    verifier = TokenVerifier(
        load_public_key(settings.public_key_pem()),
        issuer=settings.token_issuer,
        audience=settings.token_audience,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.verifier = verifier
        engine = make_engine(
            settings.database_url, pool_size=settings.db_pool_size, application_name="gateway"
        )
        # The revocation check is one SELECT: autocommit spares it a BEGIN and a ROLLBACK round trip.
        app.state.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        yield
        await engine.dispose()

    return build_app(
        title="Gateway",
        prefix="/gateway",
        description="Verifies access tokens for nginx's auth_request.",
        lifespan=lifespan,
        routers=[router],
    )
