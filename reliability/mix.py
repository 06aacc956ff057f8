"""The steady mix that every fault, restart and soak runs under, with the ledger that checks it.

Requests arrive on a schedule (open loop: a stalled server does not slow the arrivals down, so a
fault shows as failures or waits, not as missing load), each recorded with its start, end, kind
and answer:
- sends with a nonce, round-robin over the seeded (user, chat) pairs; a send that fails (any
  answer but 200, or no answer) is retried with the same nonce, as API.md 18 asks clients to;
- page reads (newest 20) and chat lists of the same users;
- sign-ups (`POST /auth/register/`) at their own slower rate (each costs an argon2 hash);
- identified event sessions that record every dispatch, and resume (op 6) when their
  connection drops or the server asks them to (op 7).

The ledger then checks, against the database: every acknowledged send stored exactly once (and
no send stored twice), every stored message delivered to each session of its chat's members
exactly once (live or in a resume replay), and no sign-up left half made.
"""

import asyncio
import contextlib
import itertools
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import websockets

from bench.seed import BenchUser, SeedData

# A request that takes longer than this is a hang (the services' own timeouts are 3 + 5 s).
CLIENT_TIMEOUT_SECONDS = 20.0
SIGNUP_PASSWORD = "reliability password 1"


@dataclass(slots=True)
class Outcome:
    started: float
    finished: float
    kind: str  # send, page, chat_list, signup
    status: str  # "200", "503", ..., or the client's error ("timeout", "ConnectError")
    json_error: bool  # a non-2xx answer carried a JSON body with a `code`

    @property
    def ok(self) -> bool:
        return self.status.startswith("2")


@dataclass
class SendRecord:
    chat_id: int
    user: BenchUser
    nonce: str
    text: str
    acked_id: int | None = None
    attempts: int = 0


@dataclass
class SignupRecord:
    username: str
    email: str
    acked_id: int | None = None
    attempts: int = 0


@dataclass
class SessionRecord:
    """What one identified event session saw."""

    user: BenchUser
    chats: set[int]
    ready_last: dict[int, int] = field(default_factory=dict)  # chat -> last_message_id at READY
    received: Counter[int] = field(default_factory=Counter)  # MESSAGE_CREATE ids
    resumes: int = 0
    reconnects: int = 0
    invalidated: bool = False  # a resume was refused: continuity lost, excluded from the check
    sequence_errors: int = 0
    identified: bool = False


class Mix:
    def __init__(
        self,
        base_url: str,
        data: SeedData,
        *,
        rate: float,
        signup_rate: float = 1.0,
        session_users: int = 20,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://") + "/events/"
        self.data = data
        self.rate = rate
        self.signup_rate = signup_rate
        self.weights = weights or {"send": 0.4, "page": 0.35, "chat_list": 0.25}
        self.pairs = list(data.pair_chats)
        random.Random(7).shuffle(self.pairs)
        self._pair_cycle = itertools.cycle(self.pairs)
        # Sessions for both members of the first chats (pair_chats lists each chat's two members).
        self.session_users = [(user, chat) for chat, user in data.pair_chats[:session_users]]
        # Those chats get a good share of the sends, so the event ledger has something to check,
        # though never so much that a (user, chat) pair nears the send rate limit (5 in 5 s).
        self._session_pairs = itertools.cycle(list(data.pair_chats[:session_users]) or self.pairs)
        send_rate = rate * self.weights.get("send", 0) or 1.0
        self._session_share = min(0.5, 0.4 * max(1, session_users) / send_rate) if session_users else 0.0
        self.outcomes: list[Outcome] = []
        self.sends: list[SendRecord] = []
        self.signups: list[SignupRecord] = []
        self.sessions: list[SessionRecord] = []
        self._stop = asyncio.Event()
        self._stop_retrying = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self.run_id = uuid.uuid4().hex[:8]
        self._counter = itertools.count()

    # ---- running -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=CLIENT_TIMEOUT_SECONDS,
            # Enough connections that a stalled stack never makes requests queue in this client;
            # few kept idle (httpcore looks at every idle connection on every request).
            limits=httpx.Limits(max_connections=4000, max_keepalive_connections=48),
        )
        for user, chat in self.session_users:
            record = SessionRecord(user, {chat})
            self.sessions.append(record)
            self._tasks.append(asyncio.create_task(self._session(record)))
        self._tasks.append(asyncio.create_task(self._schedule()))
        if self.signup_rate > 0:
            self._tasks.append(asyncio.create_task(self._signups()))

    async def wait_sessions_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not all(s.identified for s in self.sessions):
            if time.monotonic() > deadline:
                raise TimeoutError("event sessions did not identify")
            await asyncio.sleep(0.1)

    async def stop(self, retry_grace: float = 20.0) -> None:
        """Stop new arrivals; let failed sends retry for `retry_grace` s; keep the sessions open.

        Returns once no request is in flight (or the client timeout has passed), so the ledger
        never reads the database while a send it will count as acknowledged is still running."""
        self._stop.set()
        await self._settle(time.monotonic() + retry_grace)
        self._stop_retrying.set()
        await self._settle(time.monotonic() + CLIENT_TIMEOUT_SECONDS + 5)

    async def _settle(self, deadline: float) -> None:
        # The set is read again after each wait: a task may have been spawned after the copy.
        while self._inflight and time.monotonic() < deadline:
            await asyncio.wait(set(self._inflight), timeout=deadline - time.monotonic())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _schedule(self) -> None:
        kinds = list(self.weights)
        weights = [self.weights[k] for k in kinds]
        chooser = random.Random(11)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
                if self._stop.is_set():
                    break  # stopped while waiting: nothing more is sent after `stop`
            next_at += interval
            # Past a long stall (this process starved), skip the backlog rather than burst it.
            next_at = max(next_at, time.monotonic() - 1.0)
            kind = chooser.choices(kinds, weights)[0]
            if kind == "send":
                pairs = self._session_pairs if chooser.random() < self._session_share else self._pair_cycle
                chat_id, user = next(pairs)
                nonce = f"{self.run_id}-{next(self._counter)}"
                record = SendRecord(chat_id, user, nonce, f"reliability {nonce}")
                self.sends.append(record)
                self._spawn(self._send(record))
            elif kind == "page":
                chat_id, user = next(self._pair_cycle)
                self._spawn(
                    self._request("page", "GET", f"/private/{chat_id}/messages/", user, params={"limit": 20})
                )
            else:
                _, user = next(self._pair_cycle)
                self._spawn(
                    self._request("chat_list", "GET", "/private/chat-list/", user, params={"limit": 20})
                )

    async def _request(
        self, kind: str, method: str, path: str, user: BenchUser | None, **options: Any
    ) -> httpx.Response | None:
        assert self._client is not None
        headers = {"Authorization": f"Bearer {user.token}"} if user is not None else {}
        started = time.monotonic()
        response = None
        try:
            response = await self._client.request(method, path, headers=headers, **options)
            status = str(response.status_code)
            json_error = False
            if not status.startswith("2"):
                with contextlib.suppress(ValueError):
                    body = response.json()
                    json_error = isinstance(body, dict) and "code" in body
        except httpx.TimeoutException:
            status, json_error = "timeout", False
        except httpx.HTTPError as exc:
            status, json_error = type(exc).__name__, False
        self.outcomes.append(Outcome(started, time.monotonic(), kind, status, json_error))
        return response

    @staticmethod
    def _retry_after(response: httpx.Response | None) -> float:
        """How long a well-behaved client waits before trying again: the answer's Retry-After (a 429,
        a 503) up to 5 s, else half a second."""
        if response is not None:
            with contextlib.suppress(KeyError, ValueError):
                return min(5.0, float(response.headers["retry-after"]))
        return 0.5

    async def _send(self, record: SendRecord) -> None:
        body = {"text": record.text, "nonce": record.nonce}
        while True:
            record.attempts += 1
            response = await self._request(
                "send", "POST", f"/private/add-message/{record.chat_id}/", record.user, json=body
            )
            if response is not None and response.status_code == 200:
                record.acked_id = int(response.json()["id"])
                return
            if self._stop_retrying.is_set():
                return
            await asyncio.sleep(self._retry_after(response))

    async def _signups(self) -> None:
        interval = 1.0 / self.signup_rate
        while not self._stop.is_set():
            n = next(self._counter)
            name = f"r{self.run_id}_{n}"
            record = SignupRecord(name, f"{name}@example.com")
            self.signups.append(record)
            self._spawn(self._signup(record))
            await asyncio.sleep(interval)

    async def _signup(self, record: SignupRecord) -> None:
        body = {"username": record.username, "email": record.email, "password": SIGNUP_PASSWORD}
        while True:
            record.attempts += 1
            response = await self._request("signup", "POST", "/auth/register/", None, json=body)
            if response is not None and response.status_code == 200:
                record.acked_id = -1  # {"detail": "success"}: the id is found by email
                return
            if response is not None and response.status_code == 409:
                # A retry of a sign-up that went through before its answer was lost: the account
                # exists; the ledger checks it is whole.
                record.acked_id = -1
                return
            if self._stop_retrying.is_set():
                return
            await asyncio.sleep(self._retry_after(response))

    # ---- event sessions ------------------------------------------------------------------------
    async def _session(self, record: SessionRecord) -> None:
        session_id: str | None = None
        seq: int | None = None

        def last_seq() -> int | None:
            return seq

        while True:
            try:
                async with websockets.connect(self.ws_url, open_timeout=10, close_timeout=2) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    interval = hello["d"]["heartbeat_interval"] / 1000
                    if session_id is None or seq is None:
                        await ws.send(json.dumps({"op": 2, "d": {"token": record.user.token}}))
                    else:
                        record.resumes += 1
                        resume = {"token": record.user.token, "session_id": session_id, "seq": seq}
                        await ws.send(json.dumps({"op": 6, "d": resume}))
                    beat = asyncio.create_task(self._heartbeat(ws, interval, last_seq))
                    try:
                        async for raw in ws:
                            frame = json.loads(raw)
                            op = frame.get("op")
                            if op == 9:
                                # The session could not be resumed: start a new one; what was
                                # committed in between is not owed to it.
                                record.invalidated = True
                                session_id, seq = None, None
                                await ws.send(json.dumps({"op": 2, "d": {"token": record.user.token}}))
                                continue
                            if op == 7:
                                break  # RECONNECT: resume on another connection
                            if op != 0:
                                continue
                            if seq is not None and frame["s"] != seq + 1:
                                record.sequence_errors += 1
                            seq = frame["s"]
                            kind, d = frame.get("t"), frame.get("d")
                            if kind == "READY":
                                session_id = d["session_id"]
                                if not record.identified:
                                    record.ready_last = {
                                        int(c["id"]): int(c["last_message_id"] or 0) for c in d["chats"]
                                    }
                                record.identified = True
                            elif kind == "MESSAGE_CREATE":
                                record.received[int(d["id"])] += 1
                    finally:
                        beat.cancel()
            except (OSError, websockets.WebSocketException, TimeoutError, ValueError, KeyError):
                pass
            record.reconnects += 1
            await asyncio.sleep(0.3)

    @staticmethod
    async def _heartbeat(ws: Any, interval: float, last_seq: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, OSError):
            while True:
                await asyncio.sleep(interval * 0.5)
                await ws.send(json.dumps({"op": 1, "d": last_seq()}))

    # ---- ledger --------------------------------------------------------------------------------
    async def check(
        self, dsn: str, *, events_grace: float = 20.0, signup_grace: float = 30.0
    ) -> dict[str, Any]:
        """The ledger, once the mix has stopped (call after `stop`)."""
        conn = await asyncpg.connect(dsn)
        try:
            # What was acknowledged is fixed before the database is read: an answer that came
            # in during the read would count a send whose row the read could not see.
            acked = [s for s in self.sends if s.acked_id is not None]
            never_acked = [s for s in self.sends if s.acked_id is None]
            texts = [s.text for s in self.sends]
            rows = await conn.fetch(
                "SELECT id, chat_id, text FROM private_chat.messages WHERE text = ANY($1::text[])", texts
            )
            stored: dict[str, list[int]] = {}
            for row in rows:
                stored.setdefault(row["text"], []).append(int(row["id"]))
            lost = [s for s in acked if len(stored.get(s.text, [])) == 0]
            doubled = [t for t, ids in stored.items() if len(ids) > 1]
            wrong_id = [s for s in acked if stored.get(s.text) and s.acked_id not in stored[s.text]]
            sends = {
                "sent": len(self.sends),
                "acknowledged": len(acked),
                "retried": sum(1 for s in self.sends if s.attempts > 1),
                "gave_up": len(never_acked),
                "gave_up_but_stored": sum(1 for s in never_acked if stored.get(s.text)),
                "acknowledged_not_stored": len(lost),
                "stored_twice": len(doubled),
                "acknowledged_other_id": len(wrong_id),
            }
            events = await self._check_events(conn, events_grace)
            signups = await self._check_signups(conn, signup_grace)
        finally:
            await conn.close()
        ok = (
            sends["acknowledged_not_stored"] == 0
            and sends["stored_twice"] == 0
            and sends["acknowledged_other_id"] == 0
            and events["missing"] == 0
            and events["duplicated"] == 0
            and events["sequence_errors"] == 0
            and signups["half_made"] == 0
            and signups["acknowledged_not_whole"] == 0
        )
        return {"ok": ok, "sends": sends, "events": events, "signups": signups}

    async def _check_events(self, conn: asyncpg.Connection, grace: float) -> dict[str, Any]:
        deadline = time.monotonic() + grace
        while True:
            missing, duplicated, expected_total = 0, 0, 0
            checked = [s for s in self.sessions if s.identified and not s.invalidated]
            for session in checked:
                rows = await conn.fetch(
                    "SELECT id, chat_id FROM private_chat.messages WHERE chat_id = ANY($1::bigint[])",
                    list(session.chats),
                )
                expected = [r["id"] for r in rows if r["id"] > session.ready_last.get(r["chat_id"], 0)]
                expected_total += len(expected)
                missing += sum(1 for m in expected if session.received[m] == 0)
                duplicated += sum(1 for count in session.received.values() if count > 1)
            if (missing == 0 and duplicated == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        return {
            "sessions": len(self.sessions),
            "checked_sessions": len(checked),
            "invalidated_sessions": sum(1 for s in self.sessions if s.invalidated),
            "resumes": sum(s.resumes for s in self.sessions),
            "deliveries_expected": expected_total,
            "missing": missing,
            "duplicated": duplicated,
            "sequence_errors": sum(s.sequence_errors for s in self.sessions),
        }

    async def _check_signups(self, conn: asyncpg.Connection, grace: float) -> dict[str, Any]:
        """Every acknowledged sign-up is whole (active credentials and a profile); every other is
        whole or gone once the auth service's housekeeping has had its time (no pending row, no
        profile without credentials)."""
        emails = [s.email for s in self.signups]
        deadline = time.monotonic() + grace
        while True:
            rows = await conn.fetch(
                """
                SELECT c.email, c.state, c.user_id, u.id IS NOT NULL AS has_profile
                FROM auth.credentials c LEFT JOIN users.users u ON u.id = c.user_id
                WHERE c.email = ANY($1::text[])
                """,
                emails,
            )
            by_email = {r["email"]: r for r in rows}
            orphan_profiles = await conn.fetchval(
                """
                SELECT count(*) FROM users.users u
                WHERE u.username = ANY($1::text[])
                  AND NOT EXISTS (SELECT 1 FROM auth.credentials c WHERE c.user_id = u.id)
                """,
                [s.username.lower() for s in self.signups],
            )
            half = [
                r for r in rows if r["state"] != "active" or not r["has_profile"]
            ]
            if (not half and not orphan_profiles) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        acked = [s for s in self.signups if s.acked_id is not None]
        not_whole = [
            s for s in acked
            if s.email not in by_email or by_email[s.email]["state"] != "active"
            or not by_email[s.email]["has_profile"]
        ]  # fmt: skip
        return {
            "attempted": len(self.signups),
            "acknowledged": len(acked),
            "whole": sum(1 for r in rows if r["state"] == "active" and r["has_profile"]),
            "half_made": len(half) + int(orphan_profiles),
            "acknowledged_not_whole": len(not_whole),
        }


# ---- measuring the answers ----------------------------------------------------------------------
def failures_by_status(outcomes: list[Outcome], start: float, end: float) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for o in outcomes:
        if start <= o.started <= end and not o.ok:
            counts[f"{o.kind} {o.status}"] += 1
    return dict(sorted(counts.items()))


def recovery_seconds(outcomes: list[Outcome], fault_end: float) -> float:
    """Seconds after `fault_end` from which every request started was answered well (0 when none
    failed after it)."""
    last_bad = max((o.started for o in outcomes if not o.ok and o.started >= fault_end - 60), default=None)
    if last_bad is None:
        return 0.0
    return max(0.0, last_bad - fault_end)


def latency_percentile(outcomes: list[Outcome], point: float) -> float:
    values = sorted(o.finished - o.started for o in outcomes)
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(point / 100 * len(values)))]


async def measure_capacity(base_url: str, data: SeedData, *, seconds: float, concurrency: int = 32) -> float:
    """Answers per second of the request mix (no sign-ups, no sessions) with `concurrency`
    clients asking back to back: the stack's capacity for this mix on this machine, now."""
    mix = Mix(base_url, data, rate=1.0, signup_rate=0, session_users=0)
    mix._client = httpx.AsyncClient(
        base_url=base_url,
        timeout=CLIENT_TIMEOUT_SECONDS,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )
    kinds = list(mix.weights)
    weights = [mix.weights[k] for k in kinds]
    done = 0
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        nonlocal done
        chooser = random.Random(index)
        while time.monotonic() < deadline:
            kind = chooser.choices(kinds, weights)[0]
            chat_id, user = next(mix._pair_cycle)
            if kind == "send":
                nonce = f"{mix.run_id}-cap-{next(mix._counter)}"
                response = await mix._request(
                    "send", "POST", f"/private/add-message/{chat_id}/", user,
                    json={"text": f"capacity {nonce}", "nonce": nonce},
                )  # fmt: skip
            elif kind == "page":
                response = await mix._request(
                    "page", "GET", f"/private/{chat_id}/messages/", user, params={"limit": 20}
                )
            else:
                response = await mix._request(
                    "chat_list", "GET", "/private/chat-list/", user, params={"limit": 20}
                )
            if response is not None and response.status_code == 200:
                done += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(client(i) for i in range(concurrency)))
    finally:
        await mix._client.aclose()
    return done / (time.monotonic() - started)
