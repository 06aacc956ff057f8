"""`make reliability` / `make soak` / `python -m reliability rolling`: see reliability/README.md."""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench.report import environment
from bench.run import _other_test_runs
from bench.seed import SeedData, seed
from devstack import Stack, StackConfig
from devstack.config import REPO_ROOT, free_port
from devstack.stack import stop_on_termination
from reliability import faults, report, soak
from reliability.mix import measure_capacity


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    commands = ("faults", "soak", "rolling", "render")
    parser.add_argument("command", nargs="?", default="faults", choices=commands)
    parser.add_argument("source", nargs="?", type=Path, help="render: a results JSON to render again")
    parser.add_argument("--only", default=env("RELIABILITY_ONLY", ""), help="comma-separated scenario names")
    parser.add_argument("--rate", type=float, default=float(env("RELIABILITY_RATE", "0")),
                        help="requests/s of the mix (default: half the measured capacity)")
    parser.add_argument("--hold", type=float, default=float(env("RELIABILITY_HOLD_SECONDS", "10")))
    parser.add_argument("--minutes", type=float, default=float(env("SOAK_MINUTES", "30")))
    parser.add_argument("--sessions", type=int, default=int(env("RELIABILITY_SESSIONS", "40")))
    parser.add_argument("--pairs", type=int, default=int(env("RELIABILITY_PAIRS", "500")))
    parser.add_argument("--label", default="")
    parser.add_argument("--note", default=env("RELIABILITY_NOTE", ""))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reliability" / "results")
    return parser.parse_args(argv)  # fmt: skip


def stack_config(data_dir: Path) -> StackConfig:
    return StackConfig(
        data_dir=data_dir,
        http_port=free_port(),
        pg_port=free_port(),
        redis_port=free_port(),
        instances={},  # two of every service, as `make run`
        env={
            "NGINX_ACCESS_LOG": "0",  # a soak would fill the disk with it
            "LOG_LEVEL": "WARNING",
            # Every sign-up comes from this one address.
            "REGISTER_RATE_LIMIT": "1000r/s",
            "REGISTER_RATE_BURST": "1000",
            # The chat's rate limits checked but never met: the mix sends to a few chats often.
            "SEND_RATE_LIMIT": "100000/1",
            "START_CHAT_RATE_LIMIT": "100000/1",
            # Half-made sign-ups are swept within seconds, so the ledger can see them gone.
            "AUTH_PENDING_REGISTRATION_TIMEOUT_SECONDS": "10",
            "AUTH_HOUSEKEEPING_INTERVAL_SECONDS": "2",
        },
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "render":
        return render(args)
    data_dir = REPO_ROOT / ".data" / "reliability"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    config = stack_config(data_dir)
    stack = Stack(config)
    stop_on_termination()
    started_at = datetime.now(UTC)
    # The code that runs is the tree as it is now (the stack's processes load it at start).
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    load_before = os.getloadavg()
    others_before = _other_test_runs()
    print(f"reliability: starting a stack in {data_dir}", flush=True)
    stack.start()
    try:
        assert stack.database_url is not None
        dsn = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
        data = asyncio.run(seed(dsn, data_dir / "keys", pairs=args.pairs, big_messages=1000))
        document = uvloop.run(_run(args, stack, data, dsn))
    finally:
        stack.stop()
    meta = environment(stack_workers=config.workers)
    meta.update(
        {
            "command": args.command,
            "commit": commit,
            "started_at": started_at.isoformat(timespec="seconds"),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "other_pytest_processes": max(others_before, _other_test_runs()),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "instances": {name: config.instance_count(name) for name in
                          ("gateway", "auth", "users", "private_chat", "events", "qr_ws")},
            "seed": {"users": len(data.users), "chats": args.pairs},
            "note": args.note,
        }
    )  # fmt: skip
    document["meta"] = meta
    label = args.label or args.command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{label}.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = report.markdown(document, out=args.out, label=label)
    (args.out / f"{label}.md").write_text(markdown)
    print()
    print(markdown)
    return 0 if document.get("all_met") else 1


async def _run(args: argparse.Namespace, stack: Stack, data: SeedData, dsn: str) -> dict[str, Any]:
    base_url = f"http://127.0.0.1:{stack.config.http_port}"
    rate = args.rate
    capacity = None
    if not rate:
        print("reliability: measuring the mix's capacity (10 s, 32 clients back to back)", flush=True)
        await measure_capacity(base_url, data, seconds=3)  # warm-up
        capacity = await measure_capacity(base_url, data, seconds=10)
        rate = round(capacity / 2, 1)
        print(f"reliability: capacity {capacity:.0f}/s; the mix runs at {rate}/s", flush=True)
    document: dict[str, Any] = {"capacity_per_s": capacity and round(capacity, 1), "rate_per_s": rate}
    if args.command == "faults":
        chosen = [s for s in faults.scenarios(args.hold) if not args.only or s.name in args.only.split(",")]
        results = {}
        for scenario in chosen:
            print(f"reliability: {scenario.name}: {scenario.what}", flush=True)
            result = await faults.run_under_mix(
                stack, data, rate=rate, action=scenario.fault, signup_rate=scenario.signup_rate,
                session_users=args.sessions, dsn=dsn,
            )  # fmt: skip
            result["what"] = scenario.what
            result["problems"] = faults.verdict(result)
            results[scenario.name] = result
            print(f"    {report.one_line(result)}", flush=True)
            await _settle(stack)
        document["scenarios"] = results
        document["all_met"] = all(not r["problems"] for r in results.values())
    elif args.command == "rolling":
        results = {}
        for service in ("gateway", "auth", "users", "private_chat", "events", "qr_ws"):
            print(f"reliability: rolling restart of {service}", flush=True)

            async def roll(stack: Stack, service: str = service) -> None:
                await asyncio.to_thread(stack.rolling_restart, service, lambda line: None)

            result = await faults.run_under_mix(
                stack, data, rate=rate, action=roll, session_users=args.sessions, dsn=dsn, before=5, after=5
            )
            result["what"] = f"rolling restart of {service} ({len(stack.instances_of(service))} instances)"
            result["problems"] = faults.verdict(result)
            if result["failed"]:
                result["problems"].append(f"{result['failed']} failed requests (target 0)")
            results[service] = result
            print(f"    {report.one_line(result)}", flush=True)
            await _settle(stack)
        document["scenarios"] = results
        document["all_met"] = all(not r["problems"] for r in results.values())
    else:
        document.update(await soak.run(stack, data, rate=rate, minutes=args.minutes, dsn=dsn,
                                       session_users=args.sessions, out=args.out))  # fmt: skip
    return document


def render(args: argparse.Namespace) -> int:
    """Figures and targets of a soak computed again from its samples, markdown and plot written
    again beside it (when the way they are judged changes, the measurements stay)."""
    document = json.loads(args.source.read_text())
    old = document["soak"]
    totals = {key: old[key] for key in ("requests", "failed", "failed_by_status")}
    new = soak.judge(old["samples"], totals, old["ledger"], old["minutes"], args.source.parent)
    new["cpu"] = old.get("cpu")
    document["soak"] = new
    document["all_met"] = new["all_met"]
    label = args.label or args.source.stem
    (args.source.parent / f"{label}.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = report.markdown(document, out=args.source.parent, label=label)
    (args.source.parent / f"{label}.md").write_text(markdown)
    return 0


def _every_instance_ready(stack: Stack) -> bool:
    for name in ("gateway", "auth", "users", "private_chat", "events"):
        for instance in stack.instances_of(name):
            try:
                with urllib.request.urlopen(f"{stack.instance_url(instance)}/readyz", timeout=3) as answer:  # noqa: S310
                    if answer.status != 200:
                        return False
            except OSError:
                return False
    return True


async def _settle(stack: Stack, within: float = 90.0) -> None:
    """Between scenarios: every instance back and ready (the supervisor restarts killed ones)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_every_instance_ready, stack):
            await asyncio.sleep(2)
            return
        await asyncio.sleep(0.5)
    print("reliability: warning: not every instance is ready before the next scenario", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
