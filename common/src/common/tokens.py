"""Access-token verification (EdDSA). Only the auth service holds the signing key."""

import math
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from common.errors import InvalidToken, NotAuthenticated
from common.ids import parse_id

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud", "jti")
MAX_TOKEN_LENGTH = 4096
TOKEN_LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    jti: str
    expires_at: int
    # Seconds since the epoch, to the millisecond (a float NumericDate, RFC 7519 section 2), so a
    # log-out-everywhere cutoff separates the tokens issued just before it from those just after.
    issued_at: float


def token_from_authorization(header: str | None) -> str:
    """`Bearer <token>` or a bare `<token>` (older clients send it that way)."""
    if header is None or not header.strip():
        raise NotAuthenticated()
    value = header.strip()
    if value.lower() == "bearer":
        raise NotAuthenticated()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    elif rest:
        raise InvalidToken()
    if not value or len(value) > MAX_TOKEN_LENGTH:
        raise InvalidToken()
    return value


def load_public_key(pem: str) -> Ed25519PublicKey:
    key = load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the token public key must be an Ed25519 key")
    return key


class TokenVerifier:
    def __init__(self, public_key: Ed25519PublicKey, *, issuer: str, audience: str) -> None:
        self._key = public_key
        self._issuer = issuer
        self._audience = audience

    def verify(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": list(REQUIRED_CLAIMS)},
                leeway=TOKEN_LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken() from exc
        subject, jti, expires_at = claims.get("sub"), claims.get("jti"), claims.get("exp")
        issued_at = claims.get("iat")
        user_id = parse_id(subject) if isinstance(subject, str) else None
        if user_id is None or not isinstance(jti, str) or not jti or not isinstance(expires_at, int):
            raise InvalidToken()
        if not isinstance(issued_at, int | float) or isinstance(issued_at, bool):
            raise InvalidToken()
        if not math.isfinite(issued_at):
            raise InvalidToken()
        return AccessClaims(user_id=user_id, jti=jti, expires_at=expires_at, issued_at=float(issued_at))
