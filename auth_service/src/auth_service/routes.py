from typing import Annotated

from fastapi import APIRouter, Header

from auth_service.dependencies import AccountsDep
from auth_service.errors import EmailTaken, InvalidCredentials
from auth_service.schemas import Detail, LoginRequest, RegisterRequest, TokenResponse
from common.errors import (
    InvalidToken,
    NotAuthenticated,
    ServiceUnavailable,
    TooManyRequests,
    UsernameTaken,
    error_responses,
)
from common.i18n import pick_language
from common.identity import CurrentUserId
from common.tokens import token_from_authorization

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register/",
    response_model=Detail,
    responses=error_responses(EmailTaken, UsernameTaken, TooManyRequests, ServiceUnavailable),
)
async def register(
    body: RegisterRequest,
    service: AccountsDep,
    accept_language: Annotated[str | None, Header()] = None,
) -> Detail:
    await service.register(
        username=body.username,
        email=body.email,
        password=body.password,
        description=body.description,
        status=body.status,
        locale=pick_language(accept_language),
    )
    return Detail(detail="success")


@router.post(
    "/login/",
    response_model=TokenResponse,
    responses=error_responses(InvalidCredentials, TooManyRequests),
)
async def login(body: LoginRequest, service: AccountsDep) -> TokenResponse:
    return TokenResponse(token=await service.login(email=body.email, password=body.password))


@router.post("/logout/", response_model=Detail, responses=error_responses(NotAuthenticated, InvalidToken))
async def logout(
    _: CurrentUserId,
    service: AccountsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Detail:
    """Revoke the token this request carries; the gateway refuses it from then on."""
    await service.logout(token_from_authorization(authorization))
    return Detail(detail="success")


@router.post(
    "/logout-all/", response_model=Detail, responses=error_responses(NotAuthenticated, InvalidToken)
)
async def logout_all(user_id: CurrentUserId, service: AccountsDep) -> Detail:
    """Log out everywhere: every token of the caller issued until now (this one included) stops
    working, so do the QR tickets they minted, and live event sessions close with 4004 within
    about two seconds."""
    await service.logout_everywhere(user_id)
    return Detail(detail="success")
