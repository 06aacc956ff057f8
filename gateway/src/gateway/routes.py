"""The gateway's one route: nginx's auth_request target."""

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from common.errors import InvalidToken, NotAuthenticated, error_responses
from gateway.dependencies import AccessDep

TOKEN_PATH = "/gateway/get-token/"

router = APIRouter(tags=["gateway"])


class TokenOwner(BaseModel):
    user_id: int


@router.get(
    TOKEN_PATH, response_model=TokenOwner, responses=error_responses(NotAuthenticated, InvalidToken)
)
async def get_token(access: AccessDep, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
    """200 with `X-User-Id` for a good token; 401 for a missing, malformed, forged, expired or
    revoked one. nginx's auth_request asks with HEAD (the same answer without its body, as for
    every GET route: common.head.HeadAsGet; see nginx.conf.template)."""
    claims = await access.check(authorization)
    return JSONResponse({"user_id": claims.user_id}, headers={"X-User-Id": str(claims.user_id)})
