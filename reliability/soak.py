"""The soak: the mix for a long time, sampled every SAMPLE_SECONDS: throughput, p99, failures, the
memory of every process, and the sizes that must stay bounded (outbox, nonces, Redis)."""

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bench.run import process_group_rss_kib
from bench.seed import SeedData
from bench.tools import cpu_seconds
from devstack import Stack
from reliability.mix import Mix, failures_by_status, latency_percentile

SAMPLE_SECONDS = 10.0
SETTLE_MINUTES = 2.0  # growth is measured from here: caches and pools fill in the first minutes


def _pss_kib(pid: int) -> int:
    """Proportional set size: PostgreSQL's backends share its buffers, which plain RSS counts in
    every one of them (and more of them the longer they run)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_mib(stack: Stack) -> dict[str, float]:
    out = {name: round(process_group_rss_kib(p.pid) / 1024, 1) for name, p in stack.processes.items()}
    if stack.postgres is not None:
        out["postgres (PSS)"] = round(sum(_pss_kib(pid) for pid in stack.postgres.server_pids()) / 1024, 1)
    return out


async def sizes(dsn: str, redis_url: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        database_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
        values: dict[str, float] = {
            "database MiB": round(database_bytes / 2**20, 1),
            "messages": await conn.fetchval("SELECT count(*) FROM private_chat.messages"),
            # Table, indexes and TOAST: bytes per message is its growth over the messages'.
            "messages table bytes": await conn.fetchval(
                "SELECT pg_total_relation_size('private_chat.messages')"
            ),
            "outbox rows": await conn.fetchval("SELECT count(*) FROM private_chat.outbox"),
        }
        if await conn.fetchval("SELECT to_regclass('private_chat.send_nonces') IS NOT NULL"):
            values["send_nonces rows"] = await conn.fetchval("SELECT count(*) FROM private_chat.send_nonces")
    finally:
        await conn.close()
    client = aioredis.from_url(redis_url)
    try:
        info = await client.info("memory")
        values["redis used MiB"] = round(info["used_memory"] / 2**20, 1)
        values["redis keys"] = await client.dbsize()
        values["chat:ev:all entries"] = await client.xlen("chat:ev:all")
    finally:
        await client.aclose()
    return values


async def run(
    stack: Stack, data: SeedData, *, rate: float, minutes: float, dsn: str, session_users: int, out: Path
) -> dict[str, Any]:
    base_url = f"http://127.0.0.1:{stack.config.http_port}"
    assert stack.redis_url is not None
    mix = Mix(base_url, data, rate=rate, signup_rate=0.5, session_users=session_users)
    samples: list[dict[str, Any]] = []
    await mix.start()
    try:
        await mix.wait_sessions_ready()
        cpu_before = await asyncio.to_thread(_cpu, stack)
        requests_before = len(mix.outcomes)
        started = time.monotonic()
        end = started + minutes * 60
        seen, previous = 0, started
        while time.monotonic() < end:
            await asyncio.sleep(SAMPLE_SECONDS)
            now = time.monotonic()
            window = mix.outcomes[seen:]  # answered since the last sample
            seen += len(window)
            # By the time really passed: on a loaded machine a sample comes late.
            elapsed, previous = now - previous, now
            samples.append(
                {
                    "t": round(now - started, 1),
                    "throughput": round(sum(1 for o in window if o.ok) / elapsed, 1),
                    "p99_ms": round(1000 * latency_percentile(window, 99), 1),
                    "failed": sum(1 for o in window if not o.ok),
                    "rss_mib": await asyncio.to_thread(memory_mib, stack),
                    "sizes": await sizes(dsn, stack.redis_url),
                }
            )
            last = samples[-1]
            print(
                f"    t={last['t']:7.0f}s {last['throughput']:7.1f}/s p99 {last['p99_ms']:7.1f} ms "
                f"failed {last['failed']} outbox {last['sizes']['outbox rows']} "
                f"redis {last['sizes']['redis used MiB']} MiB",
                flush=True,
            )
        cpu_after = await asyncio.to_thread(_cpu, stack)
        answered = sum(1 for o in mix.outcomes[requests_before:] if o.ok)
        await mix.stop()
        ledger = await mix.check(dsn)
    finally:
        await mix.close()
    summary = summarise(samples, mix, ledger, minutes, out)
    seconds = time.monotonic() - started
    used = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    summary["cpu"] = {
        "answers": answered,
        "seconds": round(seconds, 1),
        "cpu_ms_per_answer": {n: round(1000 * v / max(answered, 1), 3) for n, v in used.items()},
        "cores_busy": {name: round(value / seconds, 3) for name, value in used.items()},
    }
    return {"soak": summary}


def _cpu(stack: Stack) -> dict[str, float]:
    groups = {name: process.pid for name, process in stack.processes.items()}
    pids = stack.postgres.server_pids() if stack.postgres is not None else []
    used = cpu_seconds(groups, pids[0] if pids else None)
    used.pop("load tool", None)
    return used


def summarise(
    samples: list[dict[str, Any]], mix: Mix, ledger: dict[str, Any], minutes: float, out: Path
) -> dict[str, Any]:
    outcomes = mix.outcomes
    totals = {
        "requests": len(outcomes),
        "failed": sum(1 for o in outcomes if not o.ok),
        "failed_by_status": failures_by_status(outcomes, 0, float("inf")),
    }
    return judge(samples, totals, ledger, minutes, out)


def judge(
    samples: list[dict[str, Any]], totals: dict[str, Any], ledger: dict[str, Any], minutes: float, out: Path
) -> dict[str, Any]:
    """The soak's figures and targets from its samples (also `python -m reliability render`)."""
    settled = [s for s in samples if s["t"] >= SETTLE_MINUTES * 60] or samples
    five = max(1, int(300 / SAMPLE_SECONDS))
    first, last = settled[:five], samples[-five:]
    rss = {}
    for name in settled[0]["rss_mib"]:
        # At rest: the lowest sample of the window. A process's momentary work shows on top of
        # it (an argon2id hash in progress holds 64 MiB for a fraction of a second); a leak
        # raises the floor itself.
        start = min(s["rss_mib"].get(name, 0) for s in first)
        end = min(s["rss_mib"].get(name, 0) for s in last)
        rss[name] = {
            "at_2min_mib": start,
            "end_mib": end,
            "peak_mib": max(s["rss_mib"].get(name, 0) for s in settled),
            "growth_pct": round(100 * (end - start) / start, 1) if start else 0.0,
        }
    first_at = settled[0]
    sizes_table = {name: {"at_2min": first_at["sizes"][name], "end": samples[-1]["sizes"][name],
                          "max": max(s["sizes"][name] for s in settled)}
                   for name in first_at["sizes"]}  # fmt: skip
    end_sizes, start_sizes = samples[-1]["sizes"], first_at["sizes"]
    grown = end_sizes["messages"] - start_sizes["messages"]
    table_grown = end_sizes["messages table bytes"] - start_sizes["messages table bytes"]
    bytes_per_message = round(table_grown / grown) if grown > 0 else None
    p99_first = _median([s["p99_ms"] for s in first])
    p99_last = _median([s["p99_ms"] for s in last])
    problems = []
    if totals["failed"]:
        problems.append(f"{totals['failed']} failed requests")
    for name, row in rss.items():
        if row["growth_pct"] > 10:
            problems.append(f"{name} RSS grew {row['growth_pct']} %")
    ratio = round(p99_last / p99_first, 2) if p99_first else 0.0
    if ratio > 1.5:
        problems.append(f"p99 rose {ratio}×")
    if not ledger["ok"]:
        problems.append("ledger failed")
    plot = out / "soak.png"
    _plot(samples, plot)
    return {
        "minutes": minutes,
        **totals,
        "throughput_first": _median([s["throughput"] for s in first]),
        "throughput_last": _median([s["throughput"] for s in last]),
        "p99_first_ms": p99_first,
        "p99_last_ms": p99_last,
        "p99_ratio": ratio,
        "rss": rss,
        "sizes": sizes_table,
        "bytes_per_message": bytes_per_message,
        "ledger": ledger,
        "samples": samples,
        "problems": problems,
        "all_met": not problems,
        "plot": plot.name,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _plot(samples: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t"] / 60 for s in samples]
    figure, (top, middle, bottom, sizes_axis) = plt.subplots(4, 1, figsize=(11, 14), sharex=True)
    top.plot(minutes, [s["throughput"] for s in samples], color="tab:blue")
    top.set_ylabel("answers/s (2xx)")
    top.set_ylim(bottom=0)
    top.set_title("Soak: the steady mix through nginx")
    middle.plot(minutes, [s["p99_ms"] for s in samples], color="tab:red")
    middle.set_ylabel("p99 latency (ms)")
    middle.set_ylim(bottom=0)
    for name in samples[0]["rss_mib"]:
        bottom.plot(minutes, [s["rss_mib"].get(name, 0) for s in samples], label=name)
    bottom.set_ylabel("RSS (MiB)")
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize="x-small", ncol=4, loc="lower right")
    for name in ("outbox rows", "redis used MiB", "database MiB"):
        sizes_axis.plot(minutes, [s["sizes"][name] for s in samples], label=name)
    sizes_axis.set_ylabel("size")
    sizes_axis.set_xlabel("minutes")
    sizes_axis.set_ylim(bottom=0)
    sizes_axis.legend(fontsize="small")
    for axis in (top, middle, bottom, sizes_axis):
        axis.axvline(SETTLE_MINUTES, color="grey", linestyle=":", linewidth=1)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
