"""The users service's internal API, as the auth service calls it during registration."""

from typing import NotRequired, TypedDict

import httpx


class NewProfile(TypedDict):
    """The body of `PUT /internal/users/{id}` (the users service's `NewUser`)."""

    username: str
    locale: str
    description: NotRequired[str]
    status: NotRequired[str]
    avatar_url: NotRequired[str | None]


class UsernameRefused(Exception):
    """The users service already has a profile with this username."""


class UsersUnavailable(Exception):
    def __init__(self, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        # False when the request never reached the service (so it certainly changed nothing).
        self.sent = sent


class UsersClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def create_user(self, user_id: int, profile: NewProfile) -> None:
        try:
            response = await self._http.put(f"/internal/users/{user_id}", json=profile)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UsersUnavailable(str(exc), sent=False) from exc
        except httpx.HTTPError as exc:
            raise UsersUnavailable(str(exc)) from exc
        if response.headers.get("x-upstream-unreached") == "1":
            # The internal address reached no instance: the request changed nothing.
            raise UsersUnavailable("no users instance is reachable", sent=False)
        if response.status_code == 409:
            raise UsernameRefused(profile["username"])
        if response.status_code not in (200, 201):
            raise UsersUnavailable(f"users service answered {response.status_code}")

    async def delete_user(self, user_id: int) -> None:
        try:
            response = await self._http.delete(f"/internal/users/{user_id}")
        except httpx.HTTPError as exc:
            raise UsersUnavailable(str(exc)) from exc
        if response.status_code not in (200, 204, 404):
            raise UsersUnavailable(f"users service answered {response.status_code}")
