"""The whole access-token check, in one place for every service that checks tokens (the gateway's
auth_request, the events gateway's IDENTIFY): signature and claims, then the revocation list."""

import time

from cachetools import LRUCache

from common.db import Executor
from common.errors import InvalidToken
from common.tokens import TOKEN_LEEWAY_SECONDS, AccessClaims, TokenVerifier, token_from_authorization

# A token is dead when its id is revoked (logout) or it was issued before its user's cutoff (log out
# everywhere): two primary-key probes in one round trip, both views published by the auth service.
IS_REVOKED_SQL = """
SELECT EXISTS (SELECT 1 FROM auth.revoked_access_tokens WHERE jti = $1::text)
    OR EXISTS (
        SELECT 1 FROM auth.access_token_cutoffs
        WHERE user_id = $2::bigint AND not_before > to_timestamp($3::float8)
    )
"""
REVOKED_AMONG_SQL = """
SELECT t.jti FROM unnest($1::text[], $2::bigint[], $3::float8[]) AS t(jti, user_id, issued_at)
WHERE EXISTS (SELECT 1 FROM auth.revoked_access_tokens r WHERE r.jti = t.jti)
   OR EXISTS (
        SELECT 1 FROM auth.access_token_cutoffs c
        WHERE c.user_id = t.user_id AND c.not_before > to_timestamp(t.issued_at)
    )
"""


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
        if self.revocations is not None and await self.revocations.fetchval(
            IS_REVOKED_SQL, claims.jti, claims.user_id, claims.issued_at
        ):
            raise InvalidToken()
        return claims

    async def revoked_among(self, tokens: list[AccessClaims]) -> set[str]:
        """The ids of those tokens that are dead now, revoked or cut off (one round trip for a whole
        instance's sessions)."""
        if self.revocations is None or not tokens:
            return set()
        rows = await self.revocations.fetch(
            REVOKED_AMONG_SQL,
            [token.jti for token in tokens],
            [token.user_id for token in tokens],
            [token.issued_at for token in tokens],
        )
        return {row[0] for row in rows}
