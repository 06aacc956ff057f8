"""The auth service's internal QR endpoints. This service never decodes a ticket or a token itself."""

from typing import Any

import httpx


class AuthUnavailable(Exception):
    pass


class AuthClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def accept_ticket(self, ticket: str, client_id: str) -> bool:
        """True when the auth service accepted the ticket for this hub (at most once per ticket)."""
        try:
            response = await self._http.post(
                "/internal/qr/accept", json={"ticket": ticket, "client_id": client_id}
            )
        except httpx.HTTPError as exc:
            raise AuthUnavailable(str(exc)) from exc
        if response.status_code == 422:
            return False
        if response.status_code != 200:
            raise AuthUnavailable(f"auth service answered {response.status_code}")
        try:
            return response.json().get("accepted") is True
        except ValueError as exc:
            raise AuthUnavailable("auth service sent no JSON") from exc

    async def identify(self, token: str) -> dict[str, Any] | None:
        """The public user object of a good, unrevoked access token of an active account; else None.

        Only `id`, `username` and `avatar_url` are kept, whatever else the answer might carry:
        the hub passes this object to the other client.
        """
        try:
            response = await self._http.post("/internal/qr/identify", json={"token": token})
        except httpx.HTTPError as exc:
            raise AuthUnavailable(str(exc)) from exc
        if response.status_code == 422:
            return None
        if response.status_code != 200:
            raise AuthUnavailable(f"auth service answered {response.status_code}")
        try:
            user = response.json().get("user")
        except (ValueError, AttributeError) as exc:
            raise AuthUnavailable("auth service sent no JSON object") from exc
        if user is None:
            return None
        if not (
            isinstance(user, dict)
            and isinstance(user.get("id"), int)
            and isinstance(user.get("username"), str)
            and isinstance(user.get("avatar_url"), str | None)
        ):
            raise AuthUnavailable("auth service sent no user object")
        return {"id": user["id"], "username": user["username"], "avatar_url": user["avatar_url"]}
