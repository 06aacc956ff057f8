from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel

from auth_service.schemas import Detail, TokenResponse
from auth_service.yandex import YandexAuth
from common.i18n import pick_language


class YandexUrl(BaseModel):
    yandex_url: str


async def get_yandex(request: Request) -> YandexAuth:
    yandex: YandexAuth = request.app.state.yandex
    return yandex


Yandex = Annotated[YandexAuth, Depends(get_yandex)]
# Yandex tokens are short url-safe strings; anything else never reaches an HTTP header.
OAuthToken = Annotated[str, Query(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9._~+/=-]+$")]

router = APIRouter(prefix="/auth", tags=["yandex"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Detail, "description": "Yandex refused the token"},
    502: {"model": Detail, "description": "Yandex is unreachable or answered something unexpected"},
    503: {"model": Detail, "description": "Yandex ID is not configured on this server"},
}


@router.get("/yandex_oauth_url/", response_model=YandexUrl, responses={503: _ERRORS[503]})
async def yandex_oauth_url(
    yandex: Yandex,
    state: Annotated[str | None, Query(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._~-]+$")] = None,
) -> YandexUrl:
    """The implicit-flow link: Yandex sends the browser back with `#access_token=...`.

    `state`, when given, is echoed by Yandex so the browser can check the answer is its own;
    without it the configured `AUTH_YANDEX_STATE` (if any) is used.
    """
    return YandexUrl(yandex_url=yandex.authorize_url(state))


@router.post(
    "/yandex_oauth_register/",
    response_model=Detail,
    responses={**_ERRORS, 409: {"model": Detail, "description": "Yandex id or email already registered"}},
)
async def yandex_oauth_register(
    oauth_token: OAuthToken,
    yandex: Yandex,
    accept_language: Annotated[str | None, Header()] = None,
) -> Detail:
    await yandex.register(oauth_token, locale=pick_language(accept_language))
    return Detail(detail="success")


@router.post(
    "/yandex_oauth_login/",
    response_model=TokenResponse,
    responses={**_ERRORS, 404: {"model": Detail, "description": "No user registered with this Yandex id"}},
)
async def yandex_oauth_login(oauth_token: OAuthToken, yandex: Yandex) -> TokenResponse:
    return TokenResponse(token=await yandex.login(oauth_token))
