"""QR login: minting a ticket (phone), exchanging it (browser), and the websocket service's
internal calls that accept a ticket for a hub and name the account behind a phone's token. The
internal router lives outside /auth/, where nginx routes nothing."""

from typing import Annotated

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from auth_service.dependencies import TicketsDep
from auth_service.qr.errors import InvalidTicket
from auth_service.schemas import TokenResponse
from common.errors import InvalidToken, NotAuthenticated, TooManyRequests, error_responses
from common.identity import CurrentUserId
from common.rules import CLIENT_ID_MAX_LENGTH, CLIENT_ID_PATTERN, CLIENT_ID_RE, MAX_TICKET_LENGTH
from common.tokens import MAX_TOKEN_LENGTH, token_from_authorization


class TicketResponse(BaseModel):
    token: str


class AcceptRequest(BaseModel):
    ticket: Annotated[str, Field(max_length=MAX_TICKET_LENGTH)]
    client_id: Annotated[str, Field(max_length=CLIENT_ID_MAX_LENGTH)]


class AcceptResponse(BaseModel):
    accepted: bool


class IdentifyRequest(BaseModel):
    token: Annotated[str, Field(max_length=MAX_TOKEN_LENGTH)]


class PublicUser(BaseModel):
    id: int
    username: str
    avatar_url: str | None


class IdentifyResponse(BaseModel):
    user: PublicUser | None


router = APIRouter(prefix="/auth", tags=["qr login"])
# The two GET routes below change something (a ticket minted, a ticket spent): no HEAD there.
QR_TICKET_PATHS = ("/auth/encrypt_user_data/", "/auth/qr_auth/")
internal_router = APIRouter(prefix="/internal/qr", include_in_schema=False)


@router.get(
    "/encrypt_user_data/",
    response_model=TicketResponse,
    responses=error_responses(NotAuthenticated, InvalidToken, TooManyRequests),
)
async def mint_ticket(
    user_id: CurrentUserId,
    tickets: TicketsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> TicketResponse:
    """A short-lived, single-use QR-login ticket for the caller (the phone sends it to the hub).
    It dies with the token that minted it (logout, log out everywhere)."""
    return TicketResponse(token=await tickets.mint(user_id, token_from_authorization(authorization)))


@router.get(
    "/qr_auth/",
    response_model=TokenResponse,
    responses=error_responses(NotAuthenticated, InvalidTicket),
)
async def exchange_ticket(
    tickets: TicketsDep,
    client_id: Annotated[
        str | None, Query(description=f"The hub's id (required): `{CLIENT_ID_PATTERN}`")
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> TokenResponse:
    """The browser trades the ticket its hub received for an access token, once. Whatever does
    not succeed is a 401 (API.md 14), a missing or malformed `client_id` included."""
    if authorization is None or not authorization.strip():
        raise NotAuthenticated()
    if client_id is None or not CLIENT_ID_RE.fullmatch(client_id):
        raise InvalidTicket()
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    if len(value) > MAX_TICKET_LENGTH:
        raise InvalidTicket()
    return TokenResponse(token=await tickets.exchange(value, client_id))


@internal_router.post("/accept", response_model=AcceptResponse)
async def accept_ticket(body: AcceptRequest, tickets: TicketsDep) -> AcceptResponse:
    return AcceptResponse(accepted=await tickets.accept(body.ticket, body.client_id))


@internal_router.post("/identify", response_model=IdentifyResponse)
async def identify(body: IdentifyRequest, tickets: TicketsDep) -> IdentifyResponse:
    """Whose is this access token? For the hub, which shows the browser who the phone is."""
    user = await tickets.identify(body.token)
    return IdentifyResponse(user=PublicUser(**user) if user is not None else None)
