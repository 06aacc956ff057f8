"""Yandex ID: the sign-up link, and registration / log-in with a Yandex OAuth token.

The browser gets the token itself (implicit flow) and hands it to us; we read the profile from
`<YANDEX_LOGIN_URL>/info` and never keep the token.
"""

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx

from auth_service import repository
from auth_service.service import AuthService
from auth_service.settings import AuthSettings
from common.errors import AppError
from common.i18n import Language

logger = logging.getLogger(__name__)

AVATAR_URL = "https://avatars.yandex.net/get-yapic/{avatar_id}/islands-200"
# The profile is a few hundred bytes; anything far bigger is not the answer we expect.
MAX_PROFILE_BYTES = 64 * 1024
USERNAME_MIN, USERNAME_MAX = 2, 32
_YANDEX_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_AVATAR_ID = re.compile(r"^[0-9A-Za-z_/-]{1,200}$")
_NOT_USERNAME_CHARS = re.compile(r"[^a-z0-9_.]+")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")


class YandexTokenRejected(Exception):
    """Yandex says the token is not valid (expired, revoked, or issued to another app)."""


class YandexUnavailable(Exception):
    """Yandex could not be asked, or answered something that is not a profile."""


@dataclass(frozen=True)
class YandexProfile:
    id: str
    login: str
    email: str | None
    avatar_url: str | None
    client_id: str | None


def parse_profile(data: Any) -> YandexProfile:
    """The fields we use from an `/info?format=json` answer; YandexUnavailable if it is not one."""
    if not isinstance(data, dict):
        raise YandexUnavailable("profile is not a JSON object")
    raw_id = data.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    if not isinstance(raw_id, str) or not _YANDEX_ID.fullmatch(raw_id):
        raise YandexUnavailable("profile has no valid id")
    login = data.get("login")
    if login is not None and not isinstance(login, str):
        raise YandexUnavailable("profile login is not a string")
    email = data.get("default_email")
    email = email.strip().lower() if isinstance(email, str) else None
    if email is not None and (len(email) > 254 or not _EMAIL.fullmatch(email)):
        email = None
    avatar_id = data.get("default_avatar_id")
    avatar_url = None
    avatar_empty = data.get("is_avatar_empty") is True
    if isinstance(avatar_id, str) and _AVATAR_ID.fullmatch(avatar_id) and not avatar_empty:
        avatar_url = AVATAR_URL.format(avatar_id=avatar_id)
    client_id = data.get("client_id")
    return YandexProfile(
        id=raw_id,
        login=login or "",
        email=email or None,
        avatar_url=avatar_url,
        client_id=client_id if isinstance(client_id, str) else None,
    )


class YandexClient:
    """`GET /info?format=json` on the Yandex ID API, through the app's shared httpx client."""

    def __init__(self, http: httpx.AsyncClient, *, timeout: float) -> None:
        self._http = http
        # httpx timeouts are per phase; this bounds the whole exchange (a slow drip included).
        self._timeout = timeout

    async def profile(self, oauth_token: str) -> YandexProfile:
        try:
            with anyio.fail_after(self._timeout):
                status, body = await self._get_info(oauth_token)
        except TimeoutError as exc:
            raise YandexUnavailable("timed out") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise YandexUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if status in (401, 403):
            raise YandexTokenRejected(f"Yandex answered {status}")
        if status != 200:
            raise YandexUnavailable(f"Yandex answered {status}")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise YandexUnavailable("profile is not JSON") from exc
        return parse_profile(data)

    async def _get_info(self, oauth_token: str) -> tuple[int, bytes]:
        request = self._http.build_request(
            "GET",
            "/info",
            params={"format": "json"},
            headers={"Authorization": f"OAuth {oauth_token}", "Accept": "application/json"},
        )
        response = await self._http.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_PROFILE_BYTES:
                    raise YandexUnavailable("profile is too large")
            return response.status_code, bytes(body)
        finally:
            await response.aclose()


def base_username(login: str) -> str:
    """A Yandex login as one of our usernames: lower-case, 2-32 of `a-z 0-9 _ .`."""
    name = _NOT_USERNAME_CHARS.sub("_", login.lower())[:USERNAME_MAX]
    if not name.strip("_."):
        name = "yandex"
    if len(name) < USERNAME_MIN:
        name = f"{name}_ya"
    return name


def username_candidates(login: str, yandex_id: str) -> Iterator[str]:
    """The names tried in order when the previous one is taken; the same for the same profile."""
    base = base_username(login)

    def with_suffix(suffix: str) -> str:
        head = base[: USERNAME_MAX - len(suffix)]
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
        accounts: AuthService,
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
                    duplicate_key="yandex_already_registered",
                )
            except AppError as exc:
                if exc.message_key != "username_taken":
                    raise
        # Every variant was taken (each attempt was undone): nothing is left behind.
        raise AppError(409, "username_taken")

    async def login(self, oauth_token: str) -> str:
        profile = await self._profile(oauth_token)
        async with self._accounts.engine.connect() as conn:
            user_id = await repository.active_by_yandex_id(conn, profile.id)
        if user_id is None:
            raise AppError(404, "yandex_user_not_found")
        return self._accounts.issuer.issue(user_id)

    async def _profile(self, oauth_token: str) -> YandexProfile:
        client_id = self._require_client_id()
        try:
            profile = await self._client.profile(oauth_token)
        except YandexTokenRejected as exc:
            raise AppError(401, "yandex_token_rejected") from exc
        except YandexUnavailable as exc:
            logger.warning("Yandex ID request failed", extra={"error": str(exc)})
            raise AppError(502, "yandex_unavailable") from exc
        # A token some other app obtained for the user must not log in here (token substitution).
        if profile.client_id != client_id:
            raise AppError(401, "yandex_token_rejected")
        return profile

    def _require_client_id(self) -> str:
        if not self._client_id:
            raise AppError(503, "yandex_not_configured")
        return self._client_id


def yandex_http_client(settings: AuthSettings) -> httpx.AsyncClient:
    """The one client the app uses for Yandex ID; closed by the app's lifespan."""
    return httpx.AsyncClient(
        base_url=settings.yandex_login_url.rstrip("/"),
        timeout=httpx.Timeout(settings.yandex_timeout_seconds),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        follow_redirects=False,
    )


def build_yandex_auth(settings: AuthSettings, accounts: AuthService, http: httpx.AsyncClient) -> YandexAuth:
    return YandexAuth(
        accounts=accounts,
        client=YandexClient(http, timeout=settings.yandex_timeout_seconds),
        client_id=settings.yandex_client_id,
        oauth_url=settings.yandex_oauth_url,
        redirect_uri=settings.yandex_redirect_uri,
        state=settings.yandex_state,
    )
