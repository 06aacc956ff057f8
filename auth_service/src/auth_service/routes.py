from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from auth_service.schemas import Detail, LoginRequest, RegisterRequest, TokenResponse
from auth_service.service import AuthService
from common.i18n import pick_language
from common.identity import CurrentUserId
from common.tokens import token_from_authorization


async def get_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.service
    return service


Service = Annotated[AuthService, Depends(get_service)]

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register/", response_model=Detail)
async def register(
    body: RegisterRequest,
    service: Service,
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
    responses={401: {"model": Detail}, 429: {"model": Detail}},
)
async def login(body: LoginRequest, service: Service) -> TokenResponse:
    return TokenResponse(token=await service.login(email=body.email, password=body.password))


@router.post("/logout/", response_model=Detail)
async def logout(
    _: CurrentUserId,
    service: Service,
    authorization: Annotated[str | None, Header()] = None,
) -> Detail:
    """Revoke the token this request carries; the gateway refuses it from then on."""
    await service.logout(token_from_authorization(authorization))
    return Detail(detail="success")
