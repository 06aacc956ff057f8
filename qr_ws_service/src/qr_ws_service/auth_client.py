"""The auth service's internal ticket endpoint. This service never decodes a ticket itself."""

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
