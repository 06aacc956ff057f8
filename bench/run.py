"""`make bench` / `python -m bench`: start the stack, seed it, run every scenario, write the results.

Load defaults (32 connections, 2 threads, 20 s after a 5 s warm-up) come from flags or the
environment (BENCH_CONNECTIONS, BENCH_THREADS, BENCH_DURATION, BENCH_WARMUP, SERVICE_WORKERS).
"""

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.seed import PASSWORD, SeedData, prepare_ceiling_tables, seed
from bench.tools import (
    Load,
    Result,
    cpu_per_request,
    cpu_seconds,
    finish_wrk,
    pgbench,
    qr_logins,
    start_wrk,
    write_requests,
    wrk,
)
from devstack import Stack, StackConfig
from devstack.config import DEFAULT_INSTANCES, REPO_ROOT, SERVICE_NAMES, free_port
from devstack.stack import stop_from_state, stop_on_termination
from devstack.system import MissingProgram, apt_install, find_postgres_bindir

ALL_SCENARIOS = (
    "nginx", "auth", "floor_auth", "floor_noauth", "read", "deep_cursor", "deep_offset",
    "send", "send_nolimit", "send_scraped", "edit", "login", "qr", "pg_write", "pg_read",
)  # fmt: skip

# The chat's rate limits in the bench stack: checked on every send (the Redis script runs), never
# met. `send_nolimit` runs the same sends with the limiter off (SEND_RATE_LIMIT=0) for the ratio.
BENCH_RATE_LIMIT = "1000000/1"

# nginx settings for the bench stack: log-in limits out of the way (one client address sends
# everything) and the bench-only locations. The access log stays on, as in production (issue 14
# measures the default settings).
BENCH_NGINX_ENV = {
    "LOGIN_RATE_LIMIT": "1000000r/s",
    "LOGIN_RATE_BURST": "1000000",
    "BENCH_LOCATIONS": "1",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--connections", type=int, default=int(env("BENCH_CONNECTIONS", "32")))
    parser.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "2")))
    parser.add_argument("--duration", type=float, default=float(env("BENCH_DURATION", "20")))
    parser.add_argument("--warmup", type=float, default=float(env("BENCH_WARMUP", "5")))
    parser.add_argument("--quick", action="store_true", help="3 s runs after a 1 s warm-up (a smoke run)")
    parser.add_argument("--workers", type=int, default=int(env("SERVICE_WORKERS", "1")))
    parser.add_argument(
        "--instances",
        type=int,
        default=int(env("BENCH_INSTANCES", "1")),
        help=f"instances of each service (make run starts {DEFAULT_INSTANCES}; 1 compares with earlier runs)",
    )
    parser.add_argument("--login-connections", type=int, default=int(env("BENCH_LOGIN_CONNECTIONS", "4")))
    parser.add_argument("--qr-concurrency", type=int, default=int(env("BENCH_QR_CONCURRENCY", "8")))
    parser.add_argument(
        "--db-pool",
        type=int,
        default=int(env("BENCH_DB_POOL_SIZE", "32")),
        help="DB_POOL_SIZE of every service (sized to the connection count: no connection churn)",
    )
    parser.add_argument("--pairs", type=int, default=int(env("BENCH_PAIRS", "100")), help="small chats")
    parser.add_argument("--messages", type=int, default=int(env("BENCH_MESSAGES", "100000")))
    parser.add_argument(
        "--limiter-rounds",
        type=int,
        default=int(env("BENCH_LIMITER_ROUNDS", "3")),
        help="send_nolimit: pairs of runs with the rate limiter off, then on",
    )
    parser.add_argument("--only", default=env("BENCH_ONLY", ""), help="comma-separated scenario names")
    parser.add_argument("--label", default=env("BENCH_LABEL", "latest"), help="results file name")
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier results JSON to compare with")
    parser.add_argument("--note", default="", help="what this run's configuration is")
    parser.add_argument(
        "--serve",
        type=float,
        default=0,
        help="seed, write every scenario's wrk request file, keep the stack up this many seconds (profiling)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    return args


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        apt_install("wrk")


def bench_config(data_dir: Path, workers: int, db_pool: int, instances: int = 1) -> StackConfig:
    # `instances` of each service (at least two of the websocket service), each with `workers`
    # processes. One instance, the default here, keeps the figures comparable with the earlier
    # runs; `make run` starts DEFAULT_INSTANCES of each.
    return StackConfig(
        data_dir=data_dir,
        http_port=free_port(),
        pg_port=free_port(),
        redis_port=free_port(),
        instances={**{name: instances for name in SERVICE_NAMES}, "qr_ws": max(2, instances)},
        workers=workers,
        env={
            "AUTH_QR_TICKET_MAX_LIVE_PER_USER": "1000",
            "DB_POOL_SIZE": str(db_pool),
            "SEND_RATE_LIMIT": BENCH_RATE_LIMIT,
            "START_CHAT_RATE_LIMIT": BENCH_RATE_LIMIT,
        },
    )


def process_group_rss_kib(pgid: int) -> int:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def requests_for(data: SeedData, scenario: str) -> list[tuple[str, str, str, str, str]]:
    big = data.big_chat
    big_tokens = [f"Bearer {user.token}" for user in data.big_members]
    cursor = data.big_first_id + 100
    offset = data.big_count - 100
    if scenario == "nginx":
        return [("GET", "/nginx-health", "", "", "")]
    if scenario == "auth":
        return [("GET", "/gateway/get-token/", f"Bearer {u.token}", "", "") for u in data.users]
    if scenario == "floor_auth":
        return [
            ("GET", "/private/chat-list/?limit=1", f"Bearer {u.token}", "", "") for _, u in data.pair_chats
        ]
    if scenario == "floor_noauth":
        return [
            ("GET", "/bench/noauth/private/chat-list/?limit=1", "", str(u.id), "") for _, u in data.pair_chats
        ]
    if scenario == "read":
        return [("GET", f"/private/{big}/messages?limit=50", t, "", "") for t in big_tokens]
    if scenario == "deep_cursor":
        return [("GET", f"/private/{big}/messages?limit=50&before={cursor}", t, "", "") for t in big_tokens]
    if scenario == "deep_offset":
        return [("GET", f"/private/{big}/messages?limit=50&offset={offset}", t, "", "") for t in big_tokens]
    if scenario in ("send", "send_nolimit", "send_scraped"):
        body = json.dumps({"text": "a benchmark message of a typical length, say sixty characters"})
        return [
            ("POST", f"/private/add-message/{c}/", f"Bearer {u.token}", "", body) for c, u in data.pair_chats
        ]
    if scenario == "login":
        return [
            ("POST", "/auth/login/", "", "", json.dumps({"email": u.email, "password": PASSWORD}))
            for u in data.users
        ]
    raise ValueError(scenario)


def edit_requests(base_url: str, data: SeedData) -> list[tuple[str, str, str, str, str]]:
    """PATCH lines: each small chat's member edits a message of their own (sent here, once)."""
    import httpx

    body = json.dumps({"text": "an edited benchmark message, of about the length of a send"})
    lines = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for chat_id, user in data.pair_chats:
            sent = client.post(
                f"/private/add-message/{chat_id}/",
                json={"text": "a message to edit"},
                headers={"Authorization": f"Bearer {user.token}"},
            )
            sent.raise_for_status()
            path = f"/private/{chat_id}/messages/{sent.json()['id']}/"
            lines.append(("PATCH", path, f"Bearer {user.token}", "", body))
    return lines


async def drain_outbox(dsn: str, polls: int = 600) -> None:
    """Waits until the relay has published every outbox row (at most `polls` × 0.2 s)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(polls):
            if not await conn.fetchval("SELECT count(*) FROM private_chat.outbox"):
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def set_send_limit(stack: Stack, value: str) -> None:
    """Restarts the chat instances with SEND_RATE_LIMIT=value."""
    for name in stack.instances_of("private_chat"):
        stack.managed[name].env["SEND_RATE_LIMIT"] = value
    stack.rolling_restart("private_chat", say=lambda _: None)


def limiter_rounds(
    stack: Stack, base_url: str, requests_file: Path, load: Load, rounds: int, postmaster: int | None
) -> Result:
    """The send scenario with the limiter off and on, alternately, `rounds` times each (half the
    scenario's duration per run, each after its warm-up): on a machine shared with other work,
    pairs measured back to back say more than two runs minutes apart. The row is the runs with the
    limiter off; its detail holds every pair, the median on/off throughput ratio, and the ratio
    of CPU per request over all the pairs (off / on: what a CPU-bound machine would lose)."""
    half = Load(load.connections, load.threads, max(3.0, load.duration / 2), load.warmup)
    pairs: list[dict[str, Any]] = []
    offs: list[Result] = []
    cpu_ms = {"off": 0.0, "on": 0.0}
    assert stack.database_url
    dsn = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    for index in range(rounds):
        pair: dict[str, Any] = {}
        order = [("off", "0"), ("on", BENCH_RATE_LIMIT)]
        for state, limit in order if index % 2 == 0 else order[::-1]:  # off-on, on-off, ...
            set_send_limit(stack, limit)
            # Each run starts with the previous one's events published: a backlog in the outbox
            # would make a run pay for the one before it.
            asyncio.run(drain_outbox(dsn))
            groups = {name: process.pid for name, process in stack.processes.items()}
            before = cpu_seconds(groups, postmaster)
            result = wrk(f"send_{state}", base_url, requests_file, half)
            used = cpu_seconds(groups, postmaster)
            spent = sum(used[name] - before.get(name, 0.0) for name in used if name != "load tool")
            # CPU of the warm-up too: per request of the run and of its warm-up.
            per_request = 1000 * spent / max(1.0, _all_requests(result, half))
            cpu_ms[state] += per_request
            pair[state] = {"rps": round(result.rps, 1), "p99_ms": round(result.p99_ms, 2),
                           "cpu_ms_per_request": round(per_request, 3), "non2xx": result.non2xx,
                           "errors": result.errors}  # fmt: skip
            if state == "off":
                offs.append(result)
        pair["ratio"] = round(pair["on"]["rps"] / pair["off"]["rps"], 3) if pair["off"]["rps"] else None
        pairs.append(pair)
        print(
            f"       pair: off {pair['off']['rps']}/s, on {pair['on']['rps']}/s, on/off {pair['ratio']}",
            flush=True,
        )
    ratios = sorted(p["ratio"] for p in pairs if p["ratio"] is not None)
    requests = sum(r.requests for r in offs)
    merged = Result(
        name="send_nolimit",
        tool="wrk",
        rps=sum(r.rps for r in offs) / len(offs),
        p50_ms=statistics.median(r.p50_ms for r in offs),
        p99_ms=max(r.p99_ms for r in offs),
        requests=requests,
        errors=sum(r.errors for r in offs) + sum(p["on"]["errors"] for p in pairs),
        non2xx=sum(r.non2xx for r in offs) + sum(p["on"]["non2xx"] for p in pairs),
    )
    merged.detail = {
        "pairs": pairs,
        "limiter_on_off_rps_ratio_median": ratios[len(ratios) // 2] if ratios else None,
        "cpu_per_request_off_on_ratio": round(cpu_ms["off"] / cpu_ms["on"], 3) if cpu_ms["on"] else None,
        "run_seconds": half.duration,
    }
    return merged


def scraped_rounds(stack: Stack, base_url: str, requests_file: Path, load: Load, rounds: int) -> Result:
    """What a Prometheus scrape costs the hot path: the send scenario without and with a scraper
    reading every instance's /metrics and nginx's stub_status once a second (ten times as often
    as the compose Prometheus), in pairs of runs back to back like the limiter's. The row is the
    scraped runs; its detail holds every pair and the median scraped/plain throughput ratio."""
    half = Load(load.connections, load.threads, max(3.0, load.duration / 2), load.warmup)
    urls = [f"http://127.0.0.1:{instance.port}/metrics" for instance in stack.services()]
    urls.append(f"http://127.0.0.1:{stack.config.status_port}/stub_status")
    pairs: list[dict[str, Any]] = []
    scraped: list[Result] = []
    scrape_seconds: list[float] = []
    scraped_bytes = 0
    for index in range(rounds):
        pair: dict[str, Any] = {}
        order = ["plain", "scraped"] if index % 2 == 0 else ["scraped", "plain"]
        for state in order:
            stop = threading.Event()

            def scrape(stop: threading.Event = stop) -> None:
                nonlocal scraped_bytes
                while not stop.is_set():
                    started = time.perf_counter()
                    for url in urls:
                        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (loopback)
                            scraped_bytes += len(answer.read())
                    scrape_seconds.append(time.perf_counter() - started)
                    stop.wait(1.0)

            scraper = threading.Thread(target=scrape, daemon=True) if state == "scraped" else None
            if scraper is not None:
                scraper.start()
            try:
                result = wrk(f"send_{state}", base_url, requests_file, half)
            finally:
                stop.set()
                if scraper is not None:
                    scraper.join()
            pair[state] = {"rps": round(result.rps, 1), "p99_ms": round(result.p99_ms, 2),
                           "non2xx": result.non2xx, "errors": result.errors}  # fmt: skip
            if state == "scraped":
                scraped.append(result)
        plain_rps = pair["plain"]["rps"]
        pair["ratio"] = round(pair["scraped"]["rps"] / plain_rps, 3) if plain_rps else None
        pairs.append(pair)
        print(f"       pair: plain {plain_rps}/s, scraped {pair['scraped']['rps']}/s, ratio {pair['ratio']}")
    ratios = sorted(p["ratio"] for p in pairs if p["ratio"] is not None)
    merged = Result(
        name="send_scraped",
        tool="wrk",
        rps=sum(r.rps for r in scraped) / len(scraped),
        p50_ms=statistics.median(r.p50_ms for r in scraped),
        p99_ms=max(r.p99_ms for r in scraped),
        requests=sum(r.requests for r in scraped),
        errors=sum(p["plain"]["errors"] + p["scraped"]["errors"] for p in pairs),
        non2xx=sum(p["plain"]["non2xx"] + p["scraped"]["non2xx"] for p in pairs),
    )
    merged.detail = {
        "pairs": pairs,
        "scraped_plain_rps_ratio_median": ratios[len(ratios) // 2] if ratios else None,
        "targets_scraped": len(urls),
        "scrape_ms_median": round(1000 * statistics.median(scrape_seconds), 2) if scrape_seconds else None,
        "bytes_per_scrape": scraped_bytes // max(1, len(scrape_seconds)),
        "run_seconds": half.duration,
    }
    return merged


def check_pages(base_url: str, data: SeedData) -> dict[str, Any]:
    """The deep cursor page and the offset page must be the same 50 messages."""
    import httpx

    headers = {"Authorization": f"Bearer {data.big_members[0].token}"}
    big = data.big_chat
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        cursor = client.get(
            f"/private/{big}/messages", params={"limit": 50, "before": data.big_first_id + 100}
        )
        offset = client.get(f"/private/{big}/messages", params={"limit": 50, "offset": data.big_count - 100})
        newest = client.get(f"/private/{big}/messages", params={"limit": 50})
    for response in (cursor, offset, newest):
        response.raise_for_status()
    cursor_ids = [m["id"] for m in cursor.json()]
    if cursor_ids != [m["id"] for m in offset.json()] or len(cursor_ids) != 50:
        raise RuntimeError("the deep cursor page and the offset page differ")
    return {
        "deep_page_ids": [cursor_ids[0], cursor_ids[-1]],
        "newest_ids": [newest.json()[0]["id"], newest.json()[-1]["id"]],
    }


def newest_page_sql(chat_id: int) -> str:
    """The read ceiling: what PostgreSQL alone can do for the data a page needs, the plain SELECT of
    one chat's newest 50 rows of the messages table (no joins, no member check: those are ours to
    make cheap, so the bench measures the page against this)."""
    columns = "id, text, answer_id, chat_id, owner_id, created_at"
    return f"SELECT {columns} FROM private_chat.messages WHERE chat_id = {int(chat_id)} ORDER BY id DESC LIMIT 50;\n"  # noqa: S608, E501


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [s for s in ALL_SCENARIOS if not args.only or s in args.only.split(",")]
    try:
        ensure_wrk()
    except MissingProgram as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    load = Load(args.connections, args.threads, args.duration, args.warmup)
    data_dir = REPO_ROOT / ".data" / "bench"
    if (data_dir / "stack.json").exists():
        stop_from_state(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    os.environ.update(BENCH_NGINX_ENV)
    config = bench_config(data_dir, args.workers, args.db_pool, args.instances)
    stack = Stack(config)
    stop_on_termination()
    print(
        f"bench: starting the stack in {data_dir}"
        f" (instances per service: {args.instances}, workers per instance: {args.workers})",
        flush=True,
    )
    load_before = os.getloadavg()
    started_at = datetime.now(UTC)
    results: list[Result] = []
    try:
        stack.start(timeout=120)
        assert stack.database_url
        dsn = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
        base_url = f"http://127.0.0.1:{config.http_port}"
        t0 = time.perf_counter()
        data = asyncio.run(seed(dsn, data_dir / "keys", pairs=args.pairs, big_messages=args.messages))
        asyncio.run(prepare_ceiling_tables(dsn))
        print(f"bench: seeded {len(data.users)} users, {args.pairs + 1} chats, {args.messages} messages "
              f"in {time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
        pages = check_pages(base_url, data)
        work = data_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        if args.serve:
            for scenario in ALL_SCENARIOS:
                if scenario not in ("qr", "pg_write", "pg_read", "edit"):
                    write_requests(work / f"{scenario}.txt", requests_for(data, scenario))
            pids = {name: process.pid for name, process in stack.processes.items()}
            print(f"bench: serving {base_url} for {args.serve:.0f}s; request files in {work}; pids {pids}")
            print(
                f"bench: e.g. BENCH_REQUESTS={work}/read.txt wrk -c32 -t2 -d20s"
                f" -s bench/lua/requests.lua {base_url}"
            )
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM ends the serving early
                time.sleep(args.serve)
            return 0
        alone_p99: float | None = None
        groups = {name: process.pid for name, process in stack.processes.items()}
        postmaster = _postmaster_pid(stack)
        send_limit = BENCH_RATE_LIMIT
        for scenario in selected:
            print(f"bench: {scenario} …", flush=True)
            if send_limit != BENCH_RATE_LIMIT:  # after send_nolimit's restarts
                set_send_limit(stack, BENCH_RATE_LIMIT)
                send_limit = BENCH_RATE_LIMIT
            if scenario == "edit":
                asyncio.run(drain_outbox(dsn))  # not paying for the sends' events
            groups = {name: process.pid for name, process in stack.processes.items()}
            cpu_before = cpu_seconds(groups, postmaster)
            wall_before = time.monotonic()
            others_before = _other_test_runs()
            if scenario == "qr":
                tokens = [u.token for u in data.users]
                result = qr_logins(base_url, tokens, args.qr_concurrency, load)
            elif scenario in ("pg_write", "pg_read"):
                assert stack.postgres is not None
                if scenario == "pg_write":
                    script = (
                        f"\\set chat random(1, {args.pairs})\n"
                        "INSERT INTO bench_ceiling.messages (chat_id, owner_id, text, answer_id, created_at) "
                        "VALUES (:chat, 1, 'a benchmark message of a typical length, say sixty characters', "
                        "NULL, clock_timestamp());\n"
                    )
                else:
                    script = newest_page_sql(data.big_chat)
                result = pgbench(
                    scenario,
                    find_postgres_bindir(),
                    stack.postgres.port,
                    "chat",
                    script,
                    load,
                    work_dir=work,
                    password=stack.postgres.password,
                )
            elif scenario == "send_nolimit":
                send_file = write_requests(work / "send.txt", requests_for(data, "send"))
                result = limiter_rounds(stack, base_url, send_file, load, args.limiter_rounds, postmaster)
                groups = {name: process.pid for name, process in stack.processes.items()}
                send_limit = BENCH_RATE_LIMIT
            elif scenario == "send_scraped":
                send_file = write_requests(work / "send.txt", requests_for(data, "send"))
                result = scraped_rounds(stack, base_url, send_file, load, args.limiter_rounds)
            elif scenario == "login":
                send_file = write_requests(work / "send.txt", requests_for(data, "send"))
                login_file = write_requests(work / "login.txt", requests_for(data, "login"))
                if load.warmup > 0:
                    warm = start_wrk(base_url, login_file, args.login_connections, 1, load.warmup)
                    finish_wrk("login", warm)
                send_proc = start_wrk(base_url, send_file, load.connections, load.threads, load.duration)
                login_proc = start_wrk(base_url, login_file, args.login_connections, 1, load.duration)
                result = finish_wrk("login", login_proc)
                under = finish_wrk("send_during_login", send_proc)
                result.detail["send_during_login"] = under.as_dict()
                result.detail["send_alone_p99_ms"] = alone_p99
                results.append(result)
                result = under
            else:
                lines = edit_requests(base_url, data) if scenario == "edit" else requests_for(data, scenario)
                result = wrk(scenario, base_url, write_requests(work / f"{scenario}.txt", lines), load)
                if scenario == "send":
                    alone_p99 = result.p99_ms
            # CPU of every process over the scenario (warm-up included), per measured request:
            # where a request's cost goes, and how many of the machine's cores were busy.
            spent = cpu_per_request(
                cpu_before,
                cpu_seconds(groups, postmaster),
                result.requests,
                time.monotonic() - wall_before,
            )
            spent["cpu_ms_per_request"] = {
                k: round(v * result.requests / max(1, _all_requests(result, load)), 3)
                for k, v in spent["cpu_ms_per_request"].items()
            }
            result.detail["cpu"] = spent
            # Test runs of other work on the machine around this scenario: its figures are then shared.
            result.detail["other_pytest_processes"] = max(others_before, _other_test_runs())
            result.detail["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
            results.append(result)
            print(f"       {result.rps:10.1f}/s  p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms"
                  f"  errors {result.errors}  non-2xx {result.non2xx}", flush=True)  # fmt: skip
        rss = {name: process_group_rss_kib(process.pid) for name, process in stack.processes.items()}
        message_rows = asyncio.run(_count_messages(dsn))
    finally:
        stack.stop()
    load_after = os.getloadavg()
    meta = report.environment(stack_workers=args.workers, stack_instances=args.instances)
    meta["db_pool_size"] = args.db_pool
    meta.update(
        {
            "started_at": started_at.isoformat(timespec="seconds"),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "load": {"connections": load.connections, "threads": load.threads, "duration_s": load.duration,
                     "warmup_s": load.warmup, "login_connections": args.login_connections,
                     "qr_concurrency": args.qr_concurrency},
            "seed": {"users": len(data.users), "small_chats": args.pairs, "big_chat_messages": args.messages,
                     "pages": pages, "message_rows_after": message_rows},
            "note": args.note,
        }
    )  # fmt: skip
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    document = report.build(meta, results, rss, baseline)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = report.markdown(document, baseline_name=str(args.baseline.name) if args.baseline else None)
    (args.out / f"{args.label}.md").write_text(markdown)
    print()
    print(markdown)
    failed = [r.name for r in results if r.errors or r.non2xx]
    return 1 if failed else 0


def _other_test_runs() -> int:
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"pytest" in cmdline.read_bytes():
                count += 1
        except OSError:
            continue
    return count


def _postmaster_pid(stack: Stack) -> int | None:
    if stack.postgres is None:
        return None
    try:
        return int((stack.postgres.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _all_requests(result: Result, load: Load) -> float:
    """Requests of the run and of its warm-up (estimated at the run's rate), which the CPU figures span."""
    return (
        result.requests * (load.duration + load.warmup) / load.duration if load.duration else result.requests
    )


async def _count_messages(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM private_chat.messages"))
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
