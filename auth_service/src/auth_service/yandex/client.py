"""The Yandex ID API as we use it: `GET <YANDEX_LOGIN_URL>/info?format=json` with the user's
OAuth token, read into the few fields registration needs."""

import json
import re
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from auth_service.settings import AuthSettings
from auth_service.yandex.errors import YandexTokenRejected, YandexUnavailable

AVATAR_URL = "https://avatars.yandex.net/get-yapic/{avatar_id}/islands-200"
# The profile is a few hundred bytes; anything far bigger is not the answer we expect.
MAX_PROFILE_BYTES = 64 * 1024
_YANDEX_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_AVATAR_ID = re.compile(r"^[0-9A-Za-z_/-]{1,200}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")


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


def yandex_http_client(settings: AuthSettings) -> httpx.AsyncClient:
    """The one client the app uses for Yandex ID; closed by the app's lifespan."""
    return httpx.AsyncClient(
        base_url=settings.yandex_login_url.rstrip("/"),
        timeout=httpx.Timeout(settings.yandex_timeout_seconds),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        follow_redirects=False,
    )
