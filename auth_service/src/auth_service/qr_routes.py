"""QR login: minting a ticket (phone), exchanging it (browser), and the websocket service's
internal call that accepts a ticket for a hub. The internal router lives outside /auth/, where
nginx routes nothing."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, Field

from auth_service.schemas import Detail, TokenResponse
from auth_service.tickets import MAX_TICKET_LENGTH, TicketService, invalid_ticket
from common.errors import not_authenticated
from common.identity import CurrentUserId

CLIENT_ID_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"


async def get_tickets(request: Request) -> TicketService:
    tickets: TicketService = request.app.state.tickets
    return tickets


Tickets = Annotated[TicketService, Depends(get_tickets)]


class TicketResponse(BaseModel):
    token: str


class AcceptRequest(BaseModel):
    ticket: Annotated[str, Field(max_length=4096)]
    client_id: Annotated[str, Field(max_length=256)]


class AcceptResponse(BaseModel):
    accepted: bool


class IdentifyRequest(BaseModel):
    token: Annotated[str, Field(max_length=4096)]


class PublicUser(BaseModel):
    id: int
    username: str
    avatar_url: str | None


class IdentifyResponse(BaseModel):
    user: PublicUser | None


router = APIRouter(prefix="/auth", tags=["qr login"])
internal_router = APIRouter(prefix="/internal/qr", include_in_schema=False)


@router.get("/encrypt_user_data/", response_model=TicketResponse, responses={401: {"model": Detail}})
async def mint_ticket(user_id: CurrentUserId, tickets: Tickets) -> TicketResponse:
    """A short-lived, single-use QR-login ticket for the caller (the phone sends it to the hub)."""
    return TicketResponse(token=await tickets.mint(user_id))


@router.get("/qr_auth/", response_model=TokenResponse, responses={401: {"model": Detail}})
async def exchange_ticket(
    client_id: Annotated[str, Query(pattern=CLIENT_ID_PATTERN, max_length=128)],
    tickets: Tickets,
    authorization: Annotated[str | None, Header()] = None,
) -> TokenResponse:
    """The browser trades the ticket its hub received for an access token, once."""
    if authorization is None or not authorization.strip():
        raise not_authenticated()
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    if len(value) > MAX_TICKET_LENGTH:
        raise invalid_ticket()
    return TokenResponse(token=await tickets.exchange(value, client_id))


@internal_router.post("/accept", response_model=AcceptResponse)
async def accept_ticket(body: AcceptRequest, tickets: Tickets) -> AcceptResponse:
    return AcceptResponse(accepted=await tickets.accept(body.ticket, body.client_id))


@internal_router.post("/identify", response_model=IdentifyResponse)
async def identify(body: IdentifyRequest, tickets: Tickets) -> IdentifyResponse:
    """Whose is this access token? For the hub, which shows the browser who the phone is."""
    user = await tickets.identify(body.token)
    return IdentifyResponse(user=PublicUser(**user) if user is not None else None)
