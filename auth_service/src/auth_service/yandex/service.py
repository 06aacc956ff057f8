"""Yandex ID: the sign-up link, and registration / log-in with a Yandex OAuth token.

The browser gets the token itself (implicit flow) and hands it to us; we read the profile from
`<YANDEX_LOGIN_URL>/info` and never keep the token.
"""

import logging
import re
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx

from auth_service.errors import EmailTaken
from auth_service.service import AccountService
from auth_service.settings import AuthSettings
from auth_service.yandex.client import YandexClient, YandexProfile
from auth_service.yandex.errors import (
    YandexAlreadyRegistered,
    YandexNotConfigured,
    YandexTokenRejected,
    YandexUnavailable,
    YandexUserNotFound,
)
from common.errors import UsernameTaken
from common.i18n import Language
from common.rules import USERNAME_ALPHABET, USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH

logger = logging.getLogger(__name__)

_NOT_USERNAME_CHARS = re.compile("[^" + re.escape("".join(sorted(USERNAME_ALPHABET))) + "]+")


def base_username(login: str) -> str:
    """A Yandex login as one of our usernames: lower-case, 2-32 of `a-z 0-9 _ .`."""
    name = _NOT_USERNAME_CHARS.sub("_", login.lower())[:USERNAME_MAX_LENGTH]
    if not name.strip("_."):
        name = "yandex"
    if len(name) < USERNAME_MIN_LENGTH:
        name = f"{name}_ya"
    return name


def username_candidates(login: str, yandex_id: str) -> Iterator[str]:
    """The names tried in order when the previous one is taken; the same for the same profile."""
    base = base_username(login)

    def with_suffix(suffix: str) -> str:
        head = base[: USERNAME_MAX_LENGTH - len(suffix)]
        # No "__" where a truncated login meets the "_<id>" suffix.
        return (head.rstrip("_.") if suffix.startswith("_") else head) + suffix

    seen: set[str] = set()
    suffixes = ["", f"_{yandex_id[-4:]}", f"_{yandex_id}"] + [str(n) for n in range(1, 10)]
    for suffix in suffixes:
        candidate = with_suffix(suffix)
        if candidate not in seen:
            seen.add(candidate)
            yield candidate


class YandexAuth:
    """Registration and log-in with a Yandex OAuth token, on top of the account saga."""

    def __init__(
        self,
        *,
        accounts: AccountService,
        client: YandexClient,
        client_id: str | None,
        oauth_url: str,
        redirect_uri: str | None,
        state: str | None,
    ) -> None:
        self._accounts = accounts
        self._client = client
        self._client_id = client_id
        self._oauth_url = oauth_url.rstrip("/")
        self._redirect_uri = redirect_uri
        self._state = state

    def authorize_url(self, state: str | None = None) -> str:
        client_id = self._require_client_id()
        params = {"response_type": "token", "client_id": client_id}
        if self._redirect_uri:
            params["redirect_uri"] = self._redirect_uri
        state = state or self._state
        if state:
            params["state"] = state
        return f"{self._oauth_url}/authorize?{urlencode(params)}"

    async def register(self, oauth_token: str, *, locale: Language) -> int:
        profile = await self._profile(oauth_token)
        for username in username_candidates(profile.login, profile.id):
            try:
                return await self._accounts.create_account(
                    email=profile.email,
                    password_hash=None,
                    profile={"username": username, "locale": locale, "avatar_url": profile.avatar_url},
                    yandex_id=profile.id,
                )
            except EmailTaken as exc:
                # The unique key that refused it is the Yandex id's or the email's.
                raise YandexAlreadyRegistered() from exc
            except UsernameTaken:
                continue
        # Every variant was taken (each attempt was undone): nothing is left behind.
        raise UsernameTaken()

    async def login(self, oauth_token: str) -> str:
        profile = await self._profile(oauth_token)
        token = await self._accounts.login_with_yandex_id(profile.id)
        if token is None:
            raise YandexUserNotFound()
        return token

    async def _profile(self, oauth_token: str) -> YandexProfile:
        client_id = self._require_client_id()
        try:
            profile = await self._client.profile(oauth_token)
        except YandexUnavailable as exc:
            logger.warning("Yandex ID request failed", extra={"error": str(exc)})
            raise
        # A token some other app obtained for the user must not log in here (token substitution).
        if profile.client_id != client_id:
            raise YandexTokenRejected("the token was issued to another application")
        return profile

    def _require_client_id(self) -> str:
        if not self._client_id:
            raise YandexNotConfigured()
        return self._client_id


def build_yandex_auth(
    settings: AuthSettings, accounts: AccountService, http: httpx.AsyncClient
) -> YandexAuth:
    return YandexAuth(
        accounts=accounts,
        client=YandexClient(http, timeout=settings.yandex_timeout_seconds),
        client_id=settings.yandex_client_id,
        oauth_url=settings.yandex_oauth_url,
        redirect_uri=settings.yandex_redirect_uri,
        state=settings.yandex_state,
    )
