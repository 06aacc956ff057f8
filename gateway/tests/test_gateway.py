"""The gateway on its own: what it answers nginx's auth_request for each kind of token, on both
its paths (the fast path below the framework and the route), with the revocation list in a real
PostgreSQL; and the remembered signatures, whose expiry is checked on every use."""

import asyncio
import math
import secrets
import time
import uuid
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.access import AccessCheck, RememberedSignatures
from common.db import close_pool, make_pool
from common.errors import InvalidToken
from common.tokens import TOKEN_LEEWAY_SECONDS, AccessClaims, TokenVerifier

TOKEN = "/gateway/get-token/"


async def revoke(raw: asyncpg.Connection, token_jti: str) -> None:
    """What the auth service's logout writes (its table behind the view the gateway reads)."""
    await raw.execute(
        "INSERT INTO auth.revoked_tokens (jti, expires_at) VALUES ($1, now() + interval '1 hour')", token_jti
    )


async def test_a_good_token_names_its_owner(gateway: Any, mint: Any) -> None:
    token = mint(41)
    async with gateway() as client:
        for authorization in (f"Bearer {token}", token, f"bearer {token}"):
            answer = await client.get(TOKEN, headers={"Authorization": authorization})
            assert answer.status_code == 200, authorization
            assert answer.json() == {"user_id": 41}
            assert answer.headers["X-User-Id"] == "41"
        head = await client.head(TOKEN, headers={"Authorization": f"Bearer {token}"})
        assert head.status_code == 200
        assert head.headers["X-User-Id"] == "41"
        assert head.content == b""


async def test_refusals_are_worded_and_name_nobody(gateway: Any, mint: Any) -> None:
    expired = mint(exp=int(time.time()) - TOKEN_LEEWAY_SECONDS - 60)
    cases = {
        "no header": (None, "not_authenticated"),
        "empty": ("", "not_authenticated"),
        "scheme only": ("Bearer", "not_authenticated"),
        "other scheme": ("Basic dXNlcjpwYXNz", "invalid_token"),
        "garbage": ("Bearer not.a.token", "invalid_token"),
        "another key": (f"Bearer {mint(key=Ed25519PrivateKey.generate())}", "invalid_token"),
        "expired": (f"Bearer {expired}", "invalid_token"),
        "another audience": (f"Bearer {mint(aud='other')}", "invalid_token"),
        "no jti": (f"Bearer {mint(jti=None)}", "invalid_token"),
        "non-numeric sub": (f"Bearer {mint(sub='admin')}", "invalid_token"),
    }
    async with gateway() as client:
        for case, (authorization, code) in cases.items():
            headers = {} if authorization is None else {"Authorization": authorization}
            answer = await client.get(TOKEN, headers=headers)
            assert answer.status_code == 401, case
            assert answer.json()["code"] == code, case
            assert "X-User-Id" not in answer.headers, case
            # nginx's auth_request asks with HEAD: the same status, no body, nobody named.
            head = await client.head(TOKEN, headers=headers)
            assert head.status_code == 401, case
            assert head.content == b"", case
            assert "X-User-Id" not in head.headers, case


async def test_a_revoked_token_is_refused_though_its_signature_is_remembered(
    gateway: Any, mint: Any, raw: asyncpg.Connection
) -> None:
    jti = uuid.uuid4().hex
    token = mint(42, jti=jti)
    async with gateway() as client:
        assert (await client.get(TOKEN, headers={"Authorization": token})).status_code == 200
        await revoke(raw, jti)
        refused = await client.get(TOKEN, headers={"Authorization": token})
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_token"


async def test_revocation_is_not_asked_when_turned_off(
    gateway: Any, mint: Any, raw: asyncpg.Connection
) -> None:
    jti = uuid.uuid4().hex
    token = mint(43, jti=jti)
    await revoke(raw, jti)
    async with gateway() as checking:
        assert (await checking.get(TOKEN, headers={"Authorization": token})).status_code == 401
    async with gateway(check_revocation=False) as trusting:
        assert (await trusting.get(TOKEN, headers={"Authorization": token})).status_code == 200


def expiring_soon() -> int:
    """An `exp` already past, but inside the leeway for about three more seconds."""
    return math.ceil(time.time()) + 3 - TOKEN_LEEWAY_SECONDS


async def until_past_leeway(exp: int) -> None:
    await asyncio.sleep(max(0.0, exp + TOKEN_LEEWAY_SECONDS + 0.2 - time.time()))


async def test_a_remembered_token_that_has_since_expired_is_refused(gateway: Any, mint: Any) -> None:
    exp = expiring_soon()
    token = mint(44, exp=exp)
    async with gateway() as client:
        # Good now: its signature is checked and remembered.
        for _ in range(2):
            assert (await client.get(TOKEN, headers={"Authorization": token})).status_code == 200
        await until_past_leeway(exp)
        for _ in range(2):
            refused = await client.get(TOKEN, headers={"Authorization": token})
            assert refused.status_code == 401
            assert refused.json()["code"] == "invalid_token"


class CountingVerifier(TokenVerifier):
    """The real verifier, counting the signatures it checks."""

    calls = 0

    def verify(self, token: str) -> AccessClaims:
        self.calls += 1
        return super().verify(token)


async def test_remembered_signatures_check_expiry_on_every_use(
    signing_key: Ed25519PrivateKey, mint: Any, claims: dict[str, str]
) -> None:
    verifier = CountingVerifier(signing_key.public_key(), **claims)
    remembered = RememberedSignatures(verifier)
    exp = expiring_soon()
    token = mint(45, exp=exp)
    assert remembered.verify(token).user_id == 45
    assert remembered.verify(token).user_id == 45
    assert verifier.calls == 1  # the second use was answered from memory
    await until_past_leeway(exp)
    # Refused from memory, without checking the signature again...
    with pytest.raises(InvalidToken):
        remembered.verify(token)
    assert verifier.calls == 1
    # ...and forgotten: the next use is verified afresh, and refused by the verifier too.
    with pytest.raises(InvalidToken):
        remembered.verify(token)
    assert verifier.calls == 2


def test_remembered_signatures_are_bounded(
    signing_key: Ed25519PrivateKey, mint: Any, claims: dict[str, str]
) -> None:
    verifier = CountingVerifier(signing_key.public_key(), **claims)
    remembered = RememberedSignatures(verifier, size=2)
    first, second, third = mint(1), mint(2), mint(3)
    for token in (first, second, first, third):  # `second` is the least recently used
        remembered.verify(token)
    assert verifier.calls == 3
    remembered.verify(first)
    remembered.verify(third)
    assert verifier.calls == 3
    remembered.verify(second)
    assert verifier.calls == 4


class CountingExecutor:
    """The real pool, with the statements sent through it counted (nothing else changes)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.statements = 0

    async def fetchval(self, query: str, *args: object) -> Any:
        self.statements += 1
        return await self.pool.fetchval(query, *args)

    async def fetch(self, query: str, *args: object) -> list[Any]:
        self.statements += 1
        return list(await self.pool.fetch(query, *args))


async def test_checks_arriving_together_share_one_statement_and_each_gets_its_own_answer(
    database_url: str,
    signing_key: Ed25519PrivateKey,
    claims: dict[str, str],
    mint: Any,
    raw: asyncpg.Connection,
) -> None:
    """The revocation checks of one turn of the event loop are asked in one statement
    (common.access._RevocationRounds): each still answers for its own token, revoked by id, cut off
    by its user's log-out-everywhere, or good."""
    revoked_jtis = [uuid.uuid4().hex for _ in range(3)]
    cut_user = 900_000 + secrets.randbelow(10**6)
    issued = int(time.time()) - 30
    good = [mint(50 + i) for i in range(10)]
    revoked = [mint(60 + i, jti=jti) for i, jti in enumerate(revoked_jtis)]
    cut_off = [mint(cut_user, iat=issued) for _ in range(3)]
    for jti in revoked_jtis:
        await revoke(raw, jti)
    await raw.execute("INSERT INTO auth.token_cutoffs (user_id, not_before) VALUES ($1, now())", cut_user)
    pool = await make_pool(database_url, size=4, application_name="gateway_rounds_test", reads_only=True)
    try:
        counting = CountingExecutor(pool)
        verifier = TokenVerifier(signing_key.public_key(), **claims)
        access = AccessCheck(RememberedSignatures(verifier), counting)  # type: ignore[arg-type]
        tokens = good + revoked + cut_off
        answers = await asyncio.gather(*(access.check(token) for token in tokens), return_exceptions=True)
        assert [isinstance(answer, AccessClaims) for answer in answers] == [True] * 10 + [False] * 6
        assert all(isinstance(answer, InvalidToken) for answer in answers[10:])
        assert [answer.user_id for answer in answers[:10]] == list(range(50, 60))  # type: ignore[union-attr]
        assert counting.statements == 1
        # A check alone is one statement too, and a later turn's checks are a new round.
        assert (await access.check(good[0])).user_id == 50
        await asyncio.gather(access.check(good[1]), access.check(revoked[0]), return_exceptions=True)
        assert counting.statements == 3
    finally:
        await close_pool(pool)
