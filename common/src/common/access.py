"""The whole access-token check, in one place for every service that checks tokens (the gateway's
auth_request, the events gateway's IDENTIFY): signature and claims, then the revocation list."""

import asyncio
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


class _RevocationRounds:
    """The revocation checks that arrive in one turn of the event loop, asked in one statement.

    Under load several token checks arrive together (nginx's auth_request subrequests, 32 at a
    time in the bench); each asked alone, the gateway spends much of its CPU writing statements to
    PostgreSQL and reading answers, and PostgreSQL most of its own per statement. Here the first
    check of a turn schedules a round for the end of the turn; every check of that turn joins it,
    and one statement answers them all (REVOKED_AMONG_SQL; a round of one asks IS_REVOKED_SQL, as
    before). Nothing waits for an earlier round: a round starts at the end of the turn its first
    check came in, so a check sees every revocation committed before it was asked, as alone. A
    failure of the statement (an outage) is every waiting check's failure."""

    def __init__(self, revocations: Executor) -> None:
        self._db = revocations
        self._waiting: list[tuple[AccessClaims, asyncio.Future[bool]]] = []
        self._rounds: set[asyncio.Task[None]] = set()  # running rounds, kept from the collector

    async def is_revoked(self, claims: AccessClaims) -> bool:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._start_round)
        answer: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((claims, answer))
        return await answer

    def _start_round(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._round(waiting))
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _round(self, waiting: list[tuple[AccessClaims, "asyncio.Future[bool]"]]) -> None:
        try:
            if len(waiting) == 1:
                only = waiting[0][0]
                dead = (
                    {only.jti}
                    if await self._db.fetchval(IS_REVOKED_SQL, only.jti, only.user_id, only.issued_at)
                    else set()
                )
            else:
                dead = await revoked_among(self._db, [claims for claims, _ in waiting])
        except Exception as exc:  # the same failure for every check of the round
            for _, answer in waiting:
                if not answer.done():
                    answer.set_exception(exc)
            return
        except BaseException:  # the round itself was cancelled (the service is stopping)
            for _, answer in waiting:
                answer.cancel()
            raise
        for claims, answer in waiting:
            if not answer.done():  # a check whose request went away was cancelled
                answer.set_result(claims.jti in dead)


async def revoked_among(db: Executor, tokens: list[AccessClaims]) -> set[str]:
    """The ids of those tokens that are dead now, revoked or cut off: one round trip."""
    rows = await db.fetch(
        REVOKED_AMONG_SQL,
        [token.jti for token in tokens],
        [token.user_id for token in tokens],
        [token.issued_at for token in tokens],
    )
    return {row[0] for row in rows}


class AccessCheck:
    """`check` raises NotAuthenticated / InvalidToken, or answers the token's claims."""

    def __init__(self, signatures: RememberedSignatures, revocations: Executor | None) -> None:
        self.signatures = signatures
        # None: the revocation list is not asked (a deployment that never revokes).
        self.revocations = revocations
        self._rounds = _RevocationRounds(revocations) if revocations is not None else None

    async def check(self, authorization: str | None) -> AccessClaims:
        claims = self.signatures.verify(token_from_authorization(authorization))
        if self._rounds is not None and await self._rounds.is_revoked(claims):
            raise InvalidToken()
        return claims

    async def revoked_among(self, tokens: list[AccessClaims]) -> set[str]:
        """The ids of those tokens that are dead now, revoked or cut off (one round trip for a whole
        instance's sessions)."""
        if self.revocations is None or not tokens:
            return set()
        return await revoked_among(self.revocations, tokens)
