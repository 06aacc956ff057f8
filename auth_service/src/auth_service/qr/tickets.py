"""QR-login tickets: opaque, encrypted, short-lived and single-use.

A ticket is AES-256-GCM over (ticket id, user id, expiry) and nothing else, under a key derived
with HKDF-SHA256 from the configured secret. Its state lives in `auth.qr_tickets` and moves
minted -> accepted (for one hub's client_id) -> consumed, each step one conditional UPDATE, so a
ticket is accepted at most once and exchanged at most once, whichever instance asks.
"""

import base64
import binascii
import logging
import os
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_service.qr import repository
from auth_service.qr.errors import InvalidTicket
from auth_service.qr.settings import QrTicketSettings
from auth_service.tokens import TokenIssuer
from common.errors import InvalidToken, TooManyRequests
from common.rules import CLIENT_ID_RE, MAX_TICKET_LENGTH

logger = logging.getLogger(__name__)

_VERSION = b"\x01"
_NONCE_BYTES = 12
_PAYLOAD = struct.Struct(">16sQQ")  # ticket id, user id, expiry (unix seconds)
_AAD = b"chat qr ticket v1"


@dataclass(frozen=True, slots=True)
class TicketClaims:
    ticket_id: uuid.UUID
    user_id: int
    expires_at: int


class TicketCodec:
    def __init__(self, secret: str) -> None:
        if len(secret.strip()) < 16:
            raise ValueError("the QR ticket secret must be at least 16 characters")
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"chat qr ticket salt",
            info=b"chat qr ticket aes-256-gcm key",
        ).derive(secret.strip().encode())
        self._aead = AESGCM(key)

    def encode(self, claims: TicketClaims) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        plain = _PAYLOAD.pack(claims.ticket_id.bytes, claims.user_id, claims.expires_at)
        sealed = self._aead.encrypt(nonce, plain, _AAD)
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).rstrip(b"=").decode()

    def decode(self, ticket: str, *, now: float | None = None) -> TicketClaims | None:
        """The claims of a genuine, unexpired ticket; None for anything else."""
        if not ticket or len(ticket) > MAX_TICKET_LENGTH or not ticket.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 1 + _NONCE_BYTES + _PAYLOAD.size or raw[:1] != _VERSION:
            return None
        nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _AAD)
        except InvalidTag:
            return None
        if len(plain) != _PAYLOAD.size:
            return None
        ticket_id, user_id, expires_at = _PAYLOAD.unpack(plain)
        if expires_at <= (time.time() if now is None else now):
            return None
        return TicketClaims(uuid.UUID(bytes=ticket_id), user_id, expires_at)


class TicketService:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        codec: TicketCodec,
        issuer: TokenIssuer,
        ttl_seconds: int,
        max_live_per_user: int,
    ) -> None:
        self.engine = engine
        self.codec = codec
        self.issuer = issuer
        self.ttl_seconds = ttl_seconds
        self.max_live_per_user = max_live_per_user

    async def mint(self, user_id: int, token: str) -> str:
        """A ticket for the owner of `token` (already checked by the gateway; read again here for
        its id and issue time, which the ticket's row keeps so the ticket dies with the token)."""
        minting = self.issuer.verifier.verify(token)
        if minting.user_id != user_id:
            raise InvalidToken()
        claims = TicketClaims(uuid.uuid4(), user_id, int(time.time()) + self.ttl_seconds)
        async with self.engine.begin() as conn:
            if await repository.count_live(conn, user_id) >= self.max_live_per_user:
                raise TooManyRequests(self.ttl_seconds)
            if not await repository.insert_minted(
                conn,
                claims.ticket_id,
                user_id,
                claims.expires_at,
                minted_by_jti=minting.jti,
                minted_by_issued_at=minting.issued_at,
            ):
                # The account is gone or not active: a token of a deleted user mints nothing.
                raise InvalidToken()
        return self.codec.encode(claims)

    async def accept(self, ticket: str, client_id: str) -> bool:
        """Called by the websocket service for the hub `client_id`; True at most once per ticket."""
        claims = self.codec.decode(ticket)
        if claims is None or not CLIENT_ID_RE.fullmatch(client_id):
            return False
        async with self.engine.begin() as conn:
            return await repository.mark_accepted(conn, claims.ticket_id, claims.user_id, client_id)

    async def identify(self, token: str) -> dict[str, Any] | None:
        """Called by the websocket service when a phone proves its account in a hub: the public
        user object of a good, unrevoked access token of an active account, else None."""
        try:
            claims = self.issuer.verifier.verify(token)
        except InvalidToken:
            return None
        async with self.engine.connect() as conn:
            return await repository.public_user(conn, claims.user_id, claims.jti, claims.issued_at)

    async def exchange(self, ticket: str, client_id: str) -> str:
        """The browser's side: an accepted ticket of this hub becomes an access token, once."""
        claims = self.codec.decode(ticket)
        if claims is None:
            raise InvalidTicket()
        async with self.engine.begin() as conn:
            consumed = await repository.mark_consumed(
                conn, claims.ticket_id, claims.user_id, client_id
            )
        if not consumed:
            raise InvalidTicket()
        return self.issuer.issue(claims.user_id)

    async def housekeeping(self) -> None:
        async with self.engine.begin() as conn:
            removed = await repository.delete_expired(conn)
        if removed:
            logger.info("removed expired QR tickets", extra={"count": removed})


def build_ticket_service(
    settings: QrTicketSettings, engine: AsyncEngine, issuer: TokenIssuer
) -> TicketService:
    return TicketService(
        engine=engine,
        codec=TicketCodec(settings.qr_ticket_secret()),
        issuer=issuer,
        ttl_seconds=settings.qr_ticket_ttl,
        max_live_per_user=settings.qr_ticket_max_live_per_user,
    )
