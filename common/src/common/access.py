"""The whole access-token check, in one place for every service that checks tokens (the gateway's
auth_request, the events gateway's IDENTIFY): signature and claims, then the revocation list."""

import time

from cachetools import LRUCache

from common.db import Executor
from common.errors import InvalidToken
from common.tokens import TOKEN_LEEWAY_SECONDS, AccessClaims, TokenVerifier, token_from_authorization

IS_REVOKED_SQL = "SELECT 1 FROM auth.revoked_access_tokens WHERE jti = $1::text"
REVOKED_AMONG_SQL = "SELECT jti FROM auth.revoked_access_tokens WHERE jti = ANY($1::text[])"


class RememberedSignatures:
    """Claims of tokens whose signature already checked out, so a client's repeated token costs a
    look-up instead of an Ed25519 verification (about 15% of the gateway's CPU in profiles). A
    signature stays valid for the same string; expiry is checked on every use. The least recently
    used entries make room when it is full."""

    def __init__(self, verifier: TokenVerifier, size: int = 10_000) -> None:
        self._verifier = verifier
        self._claims: LRUCache[str, AccessClaims] = LRUCache(maxsize=size)

    def verify(self, token: str) -> AccessClaims:
        claims = self._claims.get(token)
        if claims is None:
            claims = self._verifier.verify(token)
            self._claims[token] = claims
        elif claims.expires_at + TOKEN_LEEWAY_SECONDS <= time.time():
            self._claims.pop(token, None)
            raise InvalidToken()
        return claims


class AccessCheck:
    """`check` raises NotAuthenticated / InvalidToken, or answers the token's claims."""

    def __init__(self, signatures: RememberedSignatures, revocations: Executor | None) -> None:
        self.signatures = signatures
        # None: the revocation list is not asked (a deployment that never revokes).
        self.revocations = revocations

    async def check(self, authorization: str | None) -> AccessClaims:
        claims = self.signatures.verify(token_from_authorization(authorization))
        if self.revocations is not None and await self.revocations.fetchval(IS_REVOKED_SQL, claims.jti):
            raise InvalidToken()
        return claims

    async def revoked_among(self, jtis: list[str]) -> set[str]:
        """Which of these token ids are revoked now (one round trip for a whole instance's sessions)."""
        if self.revocations is None or not jtis:
            return set()
        return {row[0] for row in await self.revocations.fetch(REVOKED_AMONG_SQL, jtis)}
