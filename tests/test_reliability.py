"""Faults of `make reliability` that fit the test budget, on the test stack, under a small steady
mix (sends with nonces, page reads, chat lists, sign-ups, identified event sessions): no 500,
failures only as 503 JSON, good again within 5 s, and the ledger whole (every acknowledged send
stored once, every stored message delivered to each session once, no half-made sign-up)."""

import asyncio
from typing import Any

import pytest

from bench.seed import SeedData, seed
from devstack import Stack
from reliability import faults

RATE = 12.0  # requests/s: a trickle the loaded test machine carries with room to spare


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> SeedData:
    return asyncio.run(seed(_dsn(stack), stack.config.data_dir / "keys", pairs=10, big_messages=10))


def _dsn(stack: Stack) -> str:
    assert stack.database_url is not None
    return stack.database_url.replace("postgresql+asyncpg://", "postgresql://")


async def _run(stack: Stack, data: SeedData, scenario: str, **options: Any) -> dict[str, Any]:
    chosen = next(s for s in faults.scenarios(hold_seconds=4) if s.name == scenario)
    result = await faults.run_under_mix(
        stack, data, rate=RATE, action=chosen.fault, signup_rate=options.get("signup_rate", 0.5),
        session_users=8, before=3, after=7, dsn=_dsn(stack),
    )  # fmt: skip
    print(f"\n{scenario}: {result['failed_by_status']}, good after {result['recovery_seconds']} s")
    print(result["ledger"])
    return result


def _assert_targets(result: dict[str, Any]) -> None:
    assert faults.verdict(result) == [], result


async def test_an_events_instance_killed_loses_and_doubles_no_event(stack: Stack, seeded: SeedData) -> None:
    result = await _run(stack, seeded, "kill_events")
    _assert_targets(result)
    # Sessions on the killed instance came back by RESUME and got what they missed.
    assert result["ledger"]["events"]["resumes"] >= 1
    assert result["ledger"]["events"]["deliveries_expected"] > 0


async def test_a_redis_restart_delays_events_and_loses_none(stack: Stack, seeded: SeedData) -> None:
    result = await _run(stack, seeded, "redis_restart")
    _assert_targets(result)
    assert result["ledger"]["events"]["deliveries_expected"] > 0


async def test_users_stopped_during_sign_ups_leaves_none_half_made(stack: Stack, seeded: SeedData) -> None:
    result = await _run(stack, seeded, "users_stopped", signup_rate=1.0)
    _assert_targets(result)
    signups = result["ledger"]["signups"]
    # Sign-ups failed while the users service was down (503, undone), and succeed again after.
    assert any(key.startswith("signup 503") for key in result["failed_by_status"]), result
    assert signups["acknowledged"] > 0
    assert signups["half_made"] == 0
