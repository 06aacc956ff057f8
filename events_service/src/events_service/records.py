"""Resume records: what Redis keeps of a session so that any instance can resume it.

A session numbers the entries of its user's stream (common.events) in order. READY (seq 1) and
RESUMED are dispatches that are not in the stream, so the numbering runs in segments: a segment
starts at seq `a` after stream entry `ai`, and the stream's next entries are `a + 1`, `a + 2`, ...
The record (hash `chat:ev:s:<session_id>`) holds:
- `u`: the user id; `o`: the connection holding the session ("" when none does);
- `a`, `ai`: the current segment's start; `c`, `ci`: a checkpoint inside it (the last dispatch
  sent and its entry id), written in batches a few milliseconds after the frames go out;
- `p`, `pi`, `pe`: the previous segment, which is the replay of the last resume (seqs `p + 1` to
  `pe`, after entry `pi`), so a client that lost its connection during a replay resumes again;
- `j`, `ji`, `jx`: the token holding the session (its id, issued at, expires at), so a RESUME of a
  session whose token was revoked while no connection held it is refused.
From the checkpoint a seq maps to a stream position: forward by counting entries after `ci`,
backward by counting entries down to `ai`. A checkpoint that lags (an instance killed between
two writes) is still a true pair, so the mapping stays exact.

While its connection lives a record outlives the resume window by LIVE_MARGIN_SECONDS and is
refreshed; when the connection ends it expires after the resume window exactly.
"""

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from common.events import GLOBAL_STREAM, session_key, user_stream
from common.tokens import AccessClaims

# A live record's TTL is the resume window plus this, refreshed every REFRESH_SECONDS: an
# instance killed outright leaves records that expire within the window plus this margin.
LIVE_MARGIN_SECONDS = 30.0
REFRESH_SECONDS = 10.0
REPLAY_CHUNK = 500

# Conditional on the owner, so a connection that lost the session to a resume elsewhere cannot
# move its checkpoint. ARGV: owner, c ("": keep the record's), ci, ttl ms, release (1: the
# connection ended).
CHECKPOINT_SCRIPT = """
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'c', ARGV[2], 'ci', ARGV[3]) end
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'o', '') end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class BadSeq(Exception):
    """The seq is not one the session can resume from (from the future, or before its replay)."""


@dataclass(frozen=True, slots=True)
class Record:
    user_id: int
    owner: str
    a: int
    ai: str
    c: int
    ci: str
    p: int | None
    pi: str | None
    pe: int | None
    # The token holding the session; None in a record written before it was kept.
    token: AccessClaims | None


def _token_fields(token: AccessClaims) -> dict[FieldT, EncodableT]:
    return {"j": token.jti, "ji": token.issued_at, "jx": token.expires_at}


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    kind: str
    payload: str


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Records:
    def __init__(self, redis: aioredis.Redis, *, resume_window_seconds: float) -> None:
        self.redis = redis
        self.window_ms = int(resume_window_seconds * 1000)
        self.live_ttl_ms = int((resume_window_seconds + LIVE_MARGIN_SECONDS) * 1000)
        self._checkpoint = redis.register_script(CHECKPOINT_SCRIPT)

    async def create(self, session_id: str, *, token: AccessClaims, owner: str, start_id: str) -> None:
        """A new session (READY is seq 1, after entry `start_id`)."""
        key = session_key(session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            fields: dict[FieldT, EncodableT] = {
                "u": token.user_id, "o": owner, "a": 1, "ai": start_id, "c": 1, "ci": start_id
            }
            pipe.hset(key, mapping={**fields, **_token_fields(token)})
            pipe.pexpire(key, self.live_ttl_ms)
            await pipe.execute()

    async def load(self, session_id: str) -> Record | None:
        raw = await self.redis.hgetall(session_key(session_id))
        if not raw or b"u" not in raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        previous = "p" in fields
        return Record(
            user_id=int(fields["u"]),
            owner=fields.get("o", ""),
            a=int(fields["a"]),
            ai=fields["ai"],
            c=int(fields["c"]),
            ci=fields["ci"],
            p=int(fields["p"]) if previous else None,
            pi=fields["pi"] if previous else None,
            pe=int(fields["pe"]) if previous else None,
            token=(
                AccessClaims(int(fields["u"]), fields["j"], int(fields["jx"]), float(fields["ji"]))
                if "j" in fields
                else None
            ),
        )

    async def _skip(self, stream: str, after: str, count: int) -> str:
        """The range start just past `count` entries after `after`."""
        if count == 0:
            return "(" + after
        entries: Any = await self.redis.xrange(stream, "(" + after, "+", count=count)
        if len(entries) < count:
            raise BadSeq()
        return "(" + _text(entries[-1][0])

    async def replay_start(self, record: Record, seq: int) -> str:
        """Where the replay after `seq` starts in the user's stream (an XRANGE start)."""
        stream = user_stream(record.user_id)
        if seq >= record.a:
            if seq >= record.c:
                return await self._skip(stream, record.ci, seq - record.c)
            # Backward from the checkpoint: its entry is seq c, the one before c - 1, ...
            need = record.c - seq
            entries: Any = await self.redis.xrevrange(stream, record.ci, "(" + record.ai, count=need)
            if len(entries) < need:
                raise BadSeq()
            return _text(entries[-1][0])
        if record.p is not None and record.pi is not None and record.pe is not None:
            in_replay = record.p <= seq <= record.pe
            if in_replay:
                return await self._skip(stream, record.pi, seq - record.p)
        raise BadSeq()

    async def entries(self, user_id: int, start: str, end: str) -> list[Entry]:
        """The user's stream from `start` (an XRANGE start) to `end` inclusive, in order."""
        stream = user_stream(user_id)
        found: list[Entry] = []
        while True:
            chunk: Any = await self.redis.xrange(stream, start, end, count=REPLAY_CHUNK)
            for entry_id, fields in chunk:
                found.append(Entry(_text(entry_id), _text(fields[b"t"]), _text(fields[b"d"])))
            if len(chunk) < REPLAY_CHUNK:
                return found
            start = "(" + found[-1].entry_id

    async def take_over(
        self,
        session_id: str,
        *,
        old: Record,
        token: AccessClaims,
        owner: str,
        resumed_from: int,
        resumed_after: str,
        replayed: int,
        last_id: str,
    ) -> None:
        """The record after a resume from seq `resumed_from` that replays `replayed` entries
        (the first after `resumed_after`, the last `last_id`) and then sends RESUMED. A
        connection still holding the session elsewhere is told to close."""
        key = session_key(session_id)
        resumed_seq = resumed_from + replayed + 1
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "u": old.user_id,
                    "o": owner,
                    "p": resumed_from,
                    "pi": resumed_after,
                    "pe": resumed_seq - 1,
                    "a": resumed_seq,
                    "ai": last_id,
                    "c": resumed_seq,
                    "ci": last_id,
                    **_token_fields(token),
                },
            )
            pipe.pexpire(key, self.live_ttl_ms)
            if old.owner:
                pipe.xadd(GLOBAL_STREAM, {"k": session_id, "o": owner})
            await pipe.execute()

    async def checkpoint(self, items: list[tuple[str, str, int | None, str, bool]]) -> None:
        """(session id, owner, seq, entry id, released) for each session, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id, owner, seq, entry_id, released in items:
                ttl = self.window_ms if released else self.live_ttl_ms
                await self._checkpoint(
                    keys=[session_key(session_id)],
                    args=[owner, "" if seq is None else seq, entry_id, ttl, "1" if released else "0"],
                    client=pipe,
                )
            await pipe.execute()

    async def refresh(self, session_ids: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.pexpire(session_key(session_id), self.live_ttl_ms)
            await pipe.execute()

    async def delete(self, session_id: str) -> None:
        await self.redis.delete(session_key(session_id))
