from typing import Annotated

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel

from auth_service.dependencies import YandexDep
from auth_service.schemas import Detail, TokenResponse
from auth_service.yandex.errors import (
    YandexAlreadyRegistered,
    YandexNotConfigured,
    YandexTokenRejected,
    YandexUnavailable,
    YandexUserNotFound,
)
from common.errors import TooManyRequests, UsernameTaken, error_responses
from common.i18n import pick_language


class YandexUrl(BaseModel):
    yandex_url: str


# Yandex tokens are short url-safe strings; anything else never reaches an HTTP header.
OAuthToken = Annotated[str, Query(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9._~+/=-]+$")]

router = APIRouter(prefix="/auth", tags=["yandex"])

_YANDEX_ERRORS = (YandexTokenRejected, YandexUnavailable, YandexNotConfigured, TooManyRequests)


@router.get("/yandex_oauth_url/", response_model=YandexUrl, responses=error_responses(YandexNotConfigured))
async def yandex_oauth_url(
    yandex: YandexDep,
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
    responses=error_responses(*_YANDEX_ERRORS, YandexAlreadyRegistered, UsernameTaken),
)
async def yandex_oauth_register(
    oauth_token: OAuthToken,
    yandex: YandexDep,
    accept_language: Annotated[str | None, Header()] = None,
) -> Detail:
    await yandex.register(oauth_token, locale=pick_language(accept_language))
    return Detail(detail="success")


@router.post(
    "/yandex_oauth_login/",
    response_model=TokenResponse,
    responses=error_responses(*_YANDEX_ERRORS, YandexUserNotFound),
)
async def yandex_oauth_login(oauth_token: OAuthToken, yandex: YandexDep) -> TokenResponse:
    return TokenResponse(token=await yandex.login(oauth_token))
