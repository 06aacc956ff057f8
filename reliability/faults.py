"""The faults of issue 17, each applied to a running stack under the mix, and what a run reports.

A fault is a coroutine that breaks something and (for the lasting ones) mends it; the runner
notes when it started and ended. Nothing else is done by hand: a killed instance comes back by
the supervisor, services reconnect by themselves.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.seed import SeedData
from devstack import Stack
from reliability.mix import (
    Mix,
    failures_by_status,
    latency_percentile,
    recovery_seconds,
)

Fault = Callable[[Stack], Awaitable[None]]


def _kill(instance: str) -> Fault:
    async def fault(stack: Stack) -> None:
        await asyncio.to_thread(stack.kill_instance, instance)

    return fault


def _held(stop: Callable[[Stack], None], start: Callable[[Stack], None], seconds: float) -> Fault:
    async def fault(stack: Stack) -> None:
        await asyncio.to_thread(stop, stack)
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(start, stack)

    return fault


async def _restart_postgres(stack: Stack) -> None:
    await asyncio.to_thread(stack.restart_postgres)


async def _restart_redis(stack: Stack) -> None:
    await asyncio.to_thread(stack.stop_redis)
    await asyncio.to_thread(stack.start_redis)


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    fault: Fault
    signup_rate: float = 1.0


async def _nothing(stack: Stack) -> None:
    await asyncio.sleep(0)


def scenarios(hold_seconds: float = 10.0) -> list[Scenario]:
    return [
        Scenario("baseline", "none (the mix alone)", _nothing),
        Scenario("kill_chat", "SIGKILL private_chat1", _kill("private_chat1")),
        Scenario("kill_events", "SIGKILL events1", _kill("events1")),
        Scenario("kill_gateway", "SIGKILL gateway1", _kill("gateway1")),
        Scenario("postgres_restart", "PostgreSQL fast shutdown and start", _restart_postgres),
        Scenario(
            "postgres_unreachable",
            f"PostgreSQL frozen (SIGSTOP) {hold_seconds:g} s: nothing refused, nothing answered",
            _held(Stack.freeze_postgres, Stack.thaw_postgres, hold_seconds),
        ),
        Scenario(
            "postgres_down",
            f"PostgreSQL stopped {hold_seconds:g} s: connections refused",
            _held(Stack.stop_postgres, Stack.start_postgres, hold_seconds),
        ),
        Scenario("redis_restart", "Redis stopped (SIGTERM) and started", _restart_redis),
        Scenario(
            "users_stopped",
            f"both users instances stopped {hold_seconds:g} s during sign-ups (2/s)",
            _held(lambda s: s.stop_service("users"), lambda s: s.start_service("users"), hold_seconds),
            signup_rate=2.0,
        ),
    ]


async def run_under_mix(
    stack: Stack,
    data: SeedData,
    *,
    rate: float,
    action: Callable[[Stack], Awaitable[Any]],
    signup_rate: float = 1.0,
    session_users: int = 20,
    before: float = 10.0,
    after: float = 15.0,
    dsn: str,
) -> dict[str, Any]:
    """Start the mix, run `action` after `before` seconds, keep the mix `after` seconds past its
    end, stop, check the ledger; the figures of the whole run and of the fault."""
    base_url = f"http://127.0.0.1:{stack.config.http_port}"
    mix = Mix(base_url, data, rate=rate, signup_rate=signup_rate, session_users=session_users)
    await mix.start()
    try:
        await mix.wait_sessions_ready()
        await asyncio.sleep(before)
        fault_start = time.monotonic()
        await action(stack)
        fault_end = time.monotonic()
        await asyncio.sleep(after)
        await mix.stop()
        ledger = await mix.check(dsn)
    finally:
        await mix.close()
    outcomes = mix.outcomes
    window = [o for o in outcomes if fault_start - 1 <= o.started]
    slowest = max((o.finished - o.started for o in outcomes), default=0.0)
    slowest_by_kind: dict[str, list[float]] = {}
    for o in outcomes:
        took = o.finished - o.started
        if took > slowest_by_kind.get(o.kind, [0.0])[0]:
            slowest_by_kind[o.kind] = [round(took, 2), round(o.started - fault_start, 2)]
    bad = [o for o in outcomes if not o.ok]
    return {
        "requests": len(outcomes),
        "rate": rate,
        "fault_seconds": round(fault_end - fault_start, 2),
        "failed": len(bad),
        "failed_by_status": failures_by_status(outcomes, 0, float("inf")),
        "failed_500": sum(1 for o in bad if o.status == "500"),
        "failed_not_json": sum(1 for o in bad if o.status.isdigit() and not o.json_error),
        "failed_no_answer": sum(1 for o in bad if not o.status.isdigit()),
        "failed_before_fault": sum(1 for o in bad if o.finished < fault_start),
        "recovery_seconds": round(recovery_seconds(outcomes, fault_end), 2),
        "slowest_seconds": round(slowest, 2),
        # kind: [seconds, when it started relative to the fault]
        "slowest_by_kind": slowest_by_kind,
        "p99_ms_during": round(1000 * latency_percentile(window, 99), 1),
        "ledger": ledger,
    }


def verdict(result: dict[str, Any], recovery_target: float = 5.0) -> list[str]:
    """What this result fails of the targets (empty: every target met)."""
    problems = []
    if result["failed_500"]:
        problems.append(f"{result['failed_500']} answers were 500")
    if result["failed_not_json"]:
        problems.append(f"{result['failed_not_json']} failures without a JSON body")
    if result["failed_no_answer"]:
        problems.append(f"{result['failed_no_answer']} requests got no answer (timeout or connection)")
    if result["failed_before_fault"]:
        problems.append(f"{result['failed_before_fault']} failures before the fault")
    if result["recovery_seconds"] > recovery_target:
        problems.append(f"good again only {result['recovery_seconds']} s after the fault")
    if not result["ledger"]["ok"]:
        problems.append("ledger: " + ", ".join(_ledger_problems(result["ledger"])))
    return problems


def _ledger_problems(ledger: dict[str, Any]) -> list[str]:
    out = []
    for section, keys in (
        ("sends", ("acknowledged_not_stored", "stored_twice", "acknowledged_other_id")),
        ("events", ("missing", "duplicated", "sequence_errors")),
        ("signups", ("half_made", "acknowledged_not_whole")),
    ):
        for key in keys:
            if ledger[section][key]:
                out.append(f"{section} {key} {ledger[section][key]}")
    return out
