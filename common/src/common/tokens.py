"""Access-token verification (EdDSA). Only the auth service holds the signing key."""

from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from common.errors import invalid_token, not_authenticated

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud", "jti")
MAX_TOKEN_LENGTH = 4096
TOKEN_LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    jti: str
    expires_at: int


def token_from_authorization(header: str | None) -> str:
    """`Bearer <token>` or a bare `<token>` (older clients send it that way)."""
    if header is None or not header.strip():
        raise not_authenticated()
    value = header.strip()
    if value.lower() == "bearer":
        raise not_authenticated()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    elif rest:
        raise invalid_token()
    if not value or len(value) > MAX_TOKEN_LENGTH:
        raise invalid_token()
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
            raise invalid_token() from exc
        subject, jti, expires_at = claims.get("sub"), claims.get("jti"), claims.get("exp")
        if not isinstance(subject, str) or not subject.isdigit() or len(subject) > 18:
            raise invalid_token()
        if not isinstance(jti, str) or not jti or not isinstance(expires_at, int):
            raise invalid_token()
        return AccessClaims(user_id=int(subject), jti=jti, expires_at=expires_at)
