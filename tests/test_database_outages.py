"""PostgreSQL restarted, stopped or frozen under a trickle of requests through nginx: no answer is
ever a 500, what fails during the fault is a 503 JSON with Retry-After, nothing waits past the
services' timeouts, and every answer is good again within 5 s of the fault's end, with nothing
restarted by hand."""

import asyncio
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from devstack import Stack

RECOVERY_SECONDS = 5.0
# DB_CONNECT_TIMEOUT_SECONDS + DB_STATEMENT_TIMEOUT_SECONDS at their defaults, with room for a
# loaded machine: no answer may take longer.
LONGEST_ANSWER_SECONDS = 15.0
# Longer than the longest a request may legitimately wait before giving up (a connection found dead
# by its check, then a connect that times out: statement + connect timeouts), so that every request
# caught by the freeze has to give up rather than outlast it.
FROZEN_SECONDS = 12.0


@dataclass
class Answer:
    started: float
    finished: float
    what: str
    status: int
    json_code: str | None
    retry_after: str | None


@dataclass
class Trickle:
    """A few clients, each asking in turn for a page, the chat list, the profile, a send and a token
    check, every answer recorded with its timing."""

    base_url: str
    headers: dict[str, str]
    chat_id: int
    clients: int = 3
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    answers: list[Answer] = field(default_factory=list)

    def _requests(self) -> list[tuple[str, Callable[[httpx.AsyncClient, int], Any]]]:
        chat = self.chat_id
        return [
            ("page", lambda c, n: c.get(f"/private/{chat}/messages/", params={"limit": 5})),
            ("chat list", lambda c, n: c.get("/private/chat-list/", params={"limit": 5})),
            ("profile", lambda c, n: c.get("/users/me/")),
            ("send", lambda c, n: c.post(f"/private/add-message/{chat}/", json={"text": f"trickle {n}"})),
            ("token", lambda c, n: c.get("/gateway/get-token/")),
        ]

    async def _client(self, index: int) -> None:
        requests = self._requests()
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=LONGEST_ANSWER_SECONDS + 15
        ) as client:
            n = index
            while not self.stop.is_set():
                what, call = requests[n % len(requests)]
                n += 1
                started = time.monotonic()
                response = await call(client, n)
                code = None
                if response.headers.get("content-type", "").startswith("application/json"):
                    body = response.json()
                    code = body.get("code") if isinstance(body, dict) else None
                self.answers.append(
                    Answer(
                        started, time.monotonic(), what, response.status_code, code,
                        response.headers.get("retry-after"),
                    )
                )  # fmt: skip
                await asyncio.sleep(0.02)

    async def run(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(self.clients)))

    async def answered(self, count: int) -> None:
        target = len(self.answers) + count
        while len(self.answers) < target:
            await asyncio.sleep(0.05)


def _every_instance_ready(stack: Stack) -> bool:
    for name in ("gateway", "auth", "users", "private_chat"):
        for instance in stack.instances_of(name):
            try:
                with urllib.request.urlopen(f"{stack.instance_url(instance)}/readyz", timeout=3) as answer:
                    if answer.status != 200:
                        return False
            except OSError:
                return False
    return True


async def _under_trickle(
    stack: Stack, base_url: str, make_user: Any, api: httpx.AsyncClient, fault: Callable[[], Any]
) -> tuple[Trickle, float, float]:
    alice, bob = await make_user(), await make_user()
    started = await api.post("/private/start-chat/", json={"recipient_id": bob.id}, headers=alice.headers)
    assert started.status_code == 200, started.text
    trickle = Trickle(base_url, alice.headers, started.json()["chat_id"])
    running = asyncio.create_task(trickle.run())
    try:
        await trickle.answered(30)
        fault_started = time.monotonic()
        await fault()
        fault_ended = time.monotonic()
        # Past the recovery window, and then long enough to see answers good again.
        await asyncio.sleep(RECOVERY_SECONDS)
        await trickle.answered(60)
    finally:
        trickle.stop.set()
        await running
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(_every_instance_ready, stack):
        assert time.monotonic() < deadline, "instances not ready a minute after the fault"
        await asyncio.sleep(0.5)
    return trickle, fault_started, fault_ended


def _check(trickle: Trickle, fault_started: float, fault_ended: float) -> list[Answer]:
    answers = trickle.answers
    summary = {}
    for answer in answers:
        summary[(answer.what, answer.status)] = summary.get((answer.what, answer.status), 0) + 1
    print(f"\nanswers by kind and status: {sorted(summary.items())}")
    for a in answers:
        if a.finished - a.started > 1:
            took = a.finished - a.started
            print(f"slow: {a.what} {a.status} at +{a.started - fault_started:.2f} s, took {took:.2f} s")
    bad = [a for a in answers if a.status not in (200, 503)]
    assert bad == [], f"answers other than 200 and 503: {bad}"
    failed = [a for a in answers if a.status == 503]
    for answer in failed:
        assert answer.json_code == "service_unavailable", answer
        assert answer.retry_after is not None, answer
        # Failures happen because of the fault: none started long after it ended.
        assert answer.started <= fault_ended + RECOVERY_SECONDS, (answer, fault_ended)
    slowest = max(a.finished - a.started for a in answers)
    assert slowest < LONGEST_ANSWER_SECONDS, slowest
    after = [a for a in answers if a.started > fault_ended + RECOVERY_SECONDS]
    assert after, "no answers after the recovery window"
    assert all(a.status == 200 for a in after), after
    return failed


async def test_a_fast_restart_gives_only_brief_503s(
    stack: Stack, base_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    trickle, started, ended = await _under_trickle(
        stack, base_url, make_user, api, lambda: asyncio.to_thread(stack.restart_postgres)
    )
    failed = _check(trickle, started, ended)
    print(f"restart took {ended - started:.2f} s; 503s: {len(failed)} of {len(trickle.answers)}")


async def test_a_stopped_database_gives_503_until_it_is_back(
    stack: Stack, base_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    async def down_for_a_while() -> None:
        await asyncio.to_thread(stack.stop_postgres)
        await asyncio.sleep(3)
        await asyncio.to_thread(stack.start_postgres)

    trickle, started, ended = await _under_trickle(stack, base_url, make_user, api, down_for_a_while)
    failed = _check(trickle, started, ended)
    # While it was down nothing that needs the database could succeed.
    assert failed, "no 503 while PostgreSQL was stopped"


async def test_a_frozen_database_gives_503_within_the_timeouts(
    stack: Stack, base_url: str, make_user: Any, api: httpx.AsyncClient
) -> None:
    """SIGSTOP on PostgreSQL: nothing refuses, nothing answers (a partition). Requests give up
    after the services' timeouts with a 503 instead of hanging, and recover once it answers."""

    async def frozen_for_a_while() -> None:
        await asyncio.to_thread(stack.freeze_postgres)
        try:
            await asyncio.sleep(FROZEN_SECONDS)
        finally:
            await asyncio.to_thread(stack.thaw_postgres)

    trickle, started, ended = await _under_trickle(stack, base_url, make_user, api, frozen_for_a_while)
    failed = _check(trickle, started, ended)
    assert failed, "no 503 while PostgreSQL was frozen longer than the statement timeout"
