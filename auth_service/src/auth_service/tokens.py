"""Access tokens: EdDSA-signed JWTs. The payload names the user and nothing secret."""

import math
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.tokens import ALGORITHM, TokenVerifier


def load_private_key(pem: str) -> Ed25519PrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the token signing key must be an Ed25519 private key")
    return key


class TokenIssuer:
    def __init__(self, private_key: Ed25519PrivateKey, *, issuer: str, audience: str, ttl: int) -> None:
        self._key = private_key
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl
        self.verifier = TokenVerifier(private_key.public_key(), issuer=issuer, audience=audience)

    def issue(self, user_id: int) -> str:
        now = time.time()
        claims = {
            "sub": str(user_id),
            # To the millisecond, rounded down, so a token issued before a log-out-everywhere never
            # reads as issued after it (common.tokens.AccessClaims.issued_at).
            "iat": math.floor(now * 1000) / 1000,
            "exp": int(now) + self._ttl,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)
