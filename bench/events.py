"""`python -m bench.events` (run by `make bench` after the HTTP scenarios): the event gateway.

Scenarios (each prints its figures; all go to bench/results/<label>.md and .json):
- `fanout`: SESSIONS identified sessions (one per user, alternating over the two events
  instances), a steady RATE sends/s through nginx to random chats of those users; latency from
  the send's 200 to MESSAGE_CREATE at the other member's socket, p50 / p99 (target p99 <= 50 ms).
- `throughput`: the send scenario (wrk, as `bench` runs it) with no session connected, then with
  the SESSIONS sessions connected and receiving; the ratio of the two (target >= 0.8).
- `idle_rss`: RSS growth of one events instance over IDLE_SESSIONS identified idle sessions,
  heartbeats kept; KiB per session (target <= 40), and whether every heartbeat was
  acknowledged within its interval.
- `max_sessions`: sessions added to one instance in steps while every heartbeat is acknowledged
  within its interval; the most it held (bounded by MAX_SESSIONS and the file descriptor limit).

The load client is Python (asyncio, uvloop, the `websockets` client) on the same 2 cores as the
stack, so latency figures include the client's own scheduling.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvloop
import websockets
from websockets.asyncio.client import ClientConnection

from bench.seed import BenchUser, seed
from bench.tools import Load, finish_wrk, start_wrk, write_requests
from common.boundary import EDGE_HEADER
from devstack import Stack, StackConfig
from devstack.config import REPO_ROOT, free_port
from devstack.stack import stop_on_termination

# Long enough that a 30 s hold sees a heartbeat from every session, short enough to load the
# instance more than the 41.25 s default does.
BENCH_HEARTBEAT_MS = 20_000
SCENARIOS = ("fanout", "throughput", "idle_rss", "max_sessions")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--sessions", type=int, default=int(env("BENCH_EVENT_SESSIONS", "2000")))
    parser.add_argument("--rate", type=float, default=float(env("BENCH_SEND_RATE", "200")))
    parser.add_argument("--duration", type=float, default=float(env("BENCH_DURATION", "20")))
    parser.add_argument("--idle-sessions", type=int, default=int(env("BENCH_IDLE_SESSIONS", "5000")))
    parser.add_argument("--max-sessions", type=int, default=int(env("BENCH_MAX_SESSIONS", "16000")))
    parser.add_argument("--step", type=int, default=int(env("BENCH_SESSION_STEP", "4000")))
    parser.add_argument("--hold", type=float, default=float(env("BENCH_HOLD", "30")))
    parser.add_argument("--connections", type=int, default=int(env("BENCH_CONNECTIONS", "32")))
    parser.add_argument("--only", default=env("BENCH_ONLY", ""))
    parser.add_argument("--label", default=env("BENCH_EVENTS_LABEL", "events-latest"))
    parser.add_argument("--note", default="")
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.rate, args.duration = 200, 50, 4
        args.idle_sessions, args.max_sessions, args.step, args.hold = 300, 600, 300, 3
    return args


# ---- the client ---------------------------------------------------------------------------------------
@dataclass
class Watch:
    """What the sessions observed."""

    # message id -> when the send's 200 arrived, and the member who should get it
    sent_at: dict[int, float] = field(default_factory=dict)
    awaited: dict[int, int] = field(default_factory=dict)
    # (message id, user id) -> when a MESSAGE_CREATE arrived (it can beat the send's own 200)
    received_at: dict[tuple[int, int], float] = field(default_factory=dict)
    ack_latencies: list[float] = field(default_factory=list)
    late_acks: int = 0
    closed: int = 0
    retried_identifies: int = 0


class BenchSession:
    __slots__ = ("hb_sent", "task", "user_id", "ws")

    def __init__(self, ws: ClientConnection, user_id: int) -> None:
        self.ws = ws
        self.user_id = user_id
        self.hb_sent = 0.0
        self.task: asyncio.Task[None] | None = None


# Sessions go straight to the instances (the bench measures them, not nginx): with the header nginx
# adds, which the services require (common/boundary.py). Set by Bench from its stack.
DIRECT_HEADERS: dict[str, str] = {}


async def open_session(url: str, user: BenchUser, watch: Watch, interval: float) -> BenchSession:
    for attempt in range(5):  # as a client does on 4000 "try again" (an overloaded stack)
        ws = await websockets.connect(
            url, compression=None, open_timeout=60, max_queue=64, additional_headers=DIRECT_HEADERS
        )
        try:
            json.loads(await ws.recv())  # HELLO
            await ws.send(json.dumps({"op": 2, "d": {"token": user.token}}))
            ready = json.loads(await ws.recv())
            break
        except websockets.ConnectionClosed:
            watch.retried_identifies += 1
            if attempt == 4:
                raise
            await asyncio.sleep(1 + attempt)
    assert ready["t"] == "READY", ready
    session = BenchSession(ws, user.id)
    session.task = asyncio.get_running_loop().create_task(run_session(session, watch, interval))
    return session


async def run_session(session: BenchSession, watch: Watch, interval: float) -> None:
    ws = session.ws
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds

    async def beat() -> None:
        await asyncio.sleep(random.uniform(0.1, interval))  # noqa: S311 (spreads the sessions' heartbeats)
        while True:
            session.hb_sent = clock()
            await ws.send('{"op":1,"d":null}')
            await asyncio.sleep(interval)

    beater = loop.create_task(beat())
    try:
        async for raw in ws:
            now = clock()
            if raw == '{"op":11,"d":null,"s":null,"t":null}':
                latency = now - session.hb_sent
                watch.ack_latencies.append(latency)
                if latency > interval:
                    watch.late_acks += 1
                continue
            frame = json.loads(raw)
            if frame.get("t") == "MESSAGE_CREATE":
                watch.received_at[(frame["d"]["id"], session.user_id)] = now
    except websockets.ConnectionClosed:
        pass
    finally:
        watch.closed += 1
        beater.cancel()


async def open_many(
    urls: list[str], users: list[BenchUser], count: int, watch: Watch, interval: float, concurrency: int = 64
) -> list[BenchSession]:
    limit = asyncio.Semaphore(concurrency)
    sessions: list[BenchSession] = []

    async def one(index: int) -> None:
        async with limit:
            user = users[index % len(users)]
            sessions.append(await open_session(urls[index % len(urls)], user, watch, interval))

    await asyncio.gather(*(one(i) for i in range(count)))
    return sessions


async def close_all(sessions: list[BenchSession]) -> None:
    async def close(session: BenchSession) -> None:
        with contextlib.suppress(Exception):
            await session.ws.close()

    await asyncio.gather(*(close(s) for s in sessions))
    for session in sessions:
        if session.task is not None:
            with contextlib.suppress(BaseException):
                await session.task


def percentile(values: list[float], point: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(point / 100 * (len(ordered) - 1)))]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---- scenarios -------------------------------------------------------------------------------------------
@dataclass
class Bench:
    stack: Stack
    users: list[BenchUser]
    chats: list[tuple[int, BenchUser, BenchUser]]  # chat id, member a, member b
    args: argparse.Namespace
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.config.http_port}"

    def instance_url(self, name: str) -> str:
        DIRECT_HEADERS[EDGE_HEADER] = self.stack.edge_secret
        return f"ws://127.0.0.1:{self.stack.config.ports[name]}/events/"

    def pid(self, name: str) -> int:
        return self.stack.processes[name].pid

    async def fanout(self, sessions_open: list[BenchSession], watch: Watch) -> dict[str, Any]:
        rate, duration = self.args.rate, self.args.duration
        total = int(rate * duration)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        errors = 0
        connected = self.chats[: len(sessions_open) // 2]  # both members have a session
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=30) as http:
            loop = asyncio.get_running_loop()
            start = loop.time()
            inflight: set[asyncio.Task[None]] = set()

            async def one(index: int) -> None:
                nonlocal errors
                chat_id, a, b = connected[index % len(connected)]
                sender, receiver = (a, b) if index % 2 else (b, a)
                response = await http.post(
                    f"/private/add-message/{chat_id}/",
                    json={"text": f"fan-out {index}"},
                    headers={"Authorization": f"Bearer {sender.token}"},
                )
                if response.status_code != 200:
                    errors += 1
                    return
                message_id = response.json()["id"]
                watch.sent_at[message_id] = time.perf_counter()
                watch.awaited[message_id] = receiver.id

            for index in range(total):  # an open loop: a send every 1/rate s, whatever the answers
                await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
                task = loop.create_task(one(index))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            await asyncio.gather(*inflight)
            achieved = total / (loop.time() - start)

            def delivered() -> list[int]:
                return [m for m, user in watch.awaited.items() if (m, user) in watch.received_at]

            deadline = loop.time() + 10
            while len(delivered()) < len(watch.sent_at) and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the last deliveries, or a loss (counted below)
        latencies = [
            (watch.received_at[(m, watch.awaited[m])] - watch.sent_at[m]) * 1000 for m in delivered()
        ]
        # A MESSAGE_CREATE can beat the send's own 200 to the client: that is 0 ms, not negative.
        latencies = [max(0.0, value) for value in latencies]
        return {
            "sessions": len(sessions_open),
            "sends": total,
            "send_rate_achieved": round(achieved, 1),
            "send_errors": errors,
            "delivered": len(latencies),
            "missing": len(watch.sent_at) - len(latencies),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies, default=float("nan")), 2),
            "target_p99_ms": 50,
        }

    def send_requests(self) -> Path:
        lines = []
        for chat_id, a, b in self.chats:
            for sender in (a, b):
                body = json.dumps({"text": "throughput"})
                lines.append(("POST", f"/private/add-message/{chat_id}/", f"Bearer {sender.token}", "", body))
        return write_requests(Path(tempfile.mkdtemp()) / "send.txt", lines)

    def wrk_send(self, requests_file: Path) -> float:
        load = Load(self.args.connections, 2, self.args.duration, 2)
        finish_wrk("warmup", start_wrk(self.base_url, requests_file, load.connections, 2, load.warmup))
        result = finish_wrk(
            "send", start_wrk(self.base_url, requests_file, load.connections, 2, load.duration)
        )
        return result.rps

    async def run(self) -> None:
        only = set(filter(None, self.args.only.split(","))) or set(SCENARIOS)
        interval = BENCH_HEARTBEAT_MS / 1000
        urls = [self.instance_url("events1"), self.instance_url("events2")]
        session_users = [user for _, a, b in self.chats for user in (a, b)][: self.args.sessions]
        if "throughput" in only:
            requests_file = self.send_requests()
            alone = await asyncio.to_thread(self.wrk_send, requests_file)
            self.results["throughput_no_sessions_rps"] = round(alone, 1)
            print(f"send, no session connected: {alone:.0f} requests/s", flush=True)
        if "fanout" in only or "throughput" in only:
            watch = Watch()
            sessions = await open_many(urls, session_users, len(session_users), watch, interval)
            print(f"{len(sessions)} sessions identified over 2 instances", flush=True)
            if "fanout" in only:
                fanout = await self.fanout(sessions, watch)
                self.results["fanout"] = fanout
                print(f"fan-out: {fanout}", flush=True)
            if "throughput" in only:
                with_sessions = await asyncio.to_thread(self.wrk_send, requests_file)
                ratio = with_sessions / alone if alone else float("nan")
                self.results["throughput"] = {
                    "no_sessions_rps": round(alone, 1),
                    "with_sessions_rps": round(with_sessions, 1),
                    "sessions": len(sessions),
                    "ratio": round(ratio, 3),
                    "target_ratio": 0.8,
                }
                print(f"throughput: {self.results['throughput']}", flush=True)
            await close_all(sessions)
        if "idle_rss" in only:
            self.results["idle_rss"] = await self.idle_rss(interval)
            print(f"idle RSS: {self.results['idle_rss']}", flush=True)
        if "max_sessions" in only:
            self.results["max_sessions"] = await self.max_sessions(interval)
            print(f"max sessions: {self.results['max_sessions']}", flush=True)

    async def _settle(self, name: str) -> int:
        await asyncio.sleep(2)
        return rss_kib(self.pid(name))

    async def idle_rss(self, interval: float) -> dict[str, Any]:
        count = self.args.idle_sessions
        users = [user for _, a, b in self.chats for user in (a, b)]
        url = [self.instance_url("events1")]
        before = await self._settle("events1")
        watch = Watch()
        sessions = await open_many(url, users, count, watch, interval)
        opened = len(sessions)
        await asyncio.sleep(self.args.hold)
        after = rss_kib(self.pid("events1"))
        alive = opened - watch.closed
        result = {
            "sessions": opened,
            "alive_after_hold": alive,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_session": round((after - before) / max(1, opened), 2),
            "heartbeats_acked": len(watch.ack_latencies),
            "late_acks": watch.late_acks,
            "retried_identifies": watch.retried_identifies,
            "ack_p99_ms": round(percentile(watch.ack_latencies, 99) * 1000, 2),
            "target_kib_per_session": 40,
        }
        await close_all(sessions)
        return result

    async def max_sessions(self, interval: float) -> dict[str, Any]:
        users = [user for _, a, b in self.chats for user in (a, b)]
        url = [self.instance_url("events2")]
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        ceiling = min(self.args.max_sessions, soft - 500)
        bound = "the open-file limit" if ceiling < self.args.max_sessions else "--max-sessions"
        watch = Watch()
        sessions: list[BenchSession] = []
        held, steps = 0, []
        while len(sessions) < ceiling:
            step = min(self.args.step, ceiling - len(sessions))
            try:
                sessions += await open_many(url, users, step, watch, interval)
            except (OSError, websockets.WebSocketException, AssertionError) as exc:
                steps.append({"sessions": len(sessions), "stopped": repr(exc)})
                break
            late_before = watch.late_acks
            acked_before = len(watch.ack_latencies)
            await asyncio.sleep(max(self.args.hold, interval * 1.2))
            alive = len(sessions) - watch.closed
            fine = watch.late_acks == late_before and watch.closed == 0
            steps.append(
                {
                    "sessions": len(sessions),
                    "alive": alive,
                    "acks": len(watch.ack_latencies) - acked_before,
                    "late_acks": watch.late_acks - late_before,
                    "ack_p99_ms": round(percentile(watch.ack_latencies[acked_before:], 99) * 1000, 2),
                    "rss_kib": rss_kib(self.pid("events2")),
                }
            )
            print(f"  step {steps[-1]}", flush=True)
            if not fine:
                break
            held = len(sessions)
        await close_all(sessions)
        stopped = next((step["stopped"] for step in steps if "stopped" in step), None)
        if stopped is not None:
            bound = f"opening more sessions failed: {stopped}"
        return {
            "held_with_every_ack_in_time": held,
            "ceiling": ceiling,
            "limited_by": "the step that failed"
            if held < len(sessions)
            else f"the ceiling ({ceiling}: {bound})",
            "steps": steps,
        }


# ---- harness -----------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    def run(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()[:200]
        except OSError:
            return "missing"

    import redis as redis_py
    import uvicorn

    return {
        "python": sys.version.split()[0],
        "uvicorn": uvicorn.__version__,
        "websockets": websockets.__version__,
        "redis-py": redis_py.__version__,
        "redis-server": run(["redis-server", "--version"]),
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip(),
        "postgres": run(["psql", "--version"]),
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


def write_results(args: argparse.Namespace, results: dict[str, Any], meta: dict[str, Any]) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    lines = [f"# Event gateway benchmark: {args.label}", "", f"{meta['date']}; {args.note}".rstrip("; "), ""]
    lines += ["| scenario | figure | target |", "| --- | --- | --- |"]
    fanout = results.get("fanout")
    if fanout:
        lines.append(
            f"| fan-out latency, {fanout['sessions']} sessions, {fanout['send_rate_achieved']} sends/s "
            f"| p50 {fanout['p50_ms']} ms, p99 {fanout['p99_ms']} ms ({fanout['delivered']} delivered, "
            f"{fanout['missing']} missing) | p99 <= 50 ms |"
        )
    throughput = results.get("throughput")
    if throughput:
        lines.append(
            f"| send throughput with {throughput['sessions']} sessions / none "
            f"| {throughput['with_sessions_rps']} / {throughput['no_sessions_rps']} requests/s = "
            f"{throughput['ratio']} | >= 0.8 |"
        )
    idle = results.get("idle_rss")
    if idle:
        lines.append(
            f"| RSS per idle identified session ({idle['sessions']}) | {idle['kib_per_session']} KiB "
            f"({idle['late_acks']} late acks of {idle['heartbeats_acked']}) | <= 40 KiB |"
        )
    most = results.get("max_sessions")
    if most:
        lines.append(
            "| sessions one instance holds, every heartbeat acked in time "
            f"| {most['held_with_every_ack_in_time']} "
            f"({most['limited_by']}) | |"
        )
    lines += [
        "",
        "Machine: " + json.dumps(meta["machine"]),
        "",
        "Versions: " + json.dumps(meta["versions"]),
        "",
    ]
    path = args.out / f"{args.label}.md"
    path.write_text("\n".join(lines))
    return path


def seed_chats(data: Any) -> list[tuple[int, BenchUser, BenchUser]]:
    by_chat: dict[int, list[BenchUser]] = {}
    for chat_id, member in data.pair_chats:
        by_chat.setdefault(chat_id, []).append(member)
    return [(chat_id, members[0], members[1]) for chat_id, members in by_chat.items()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data_dir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    data_dir.chmod(0o755)
    config = StackConfig(
        data_dir=data_dir,
        http_port=free_port(),
        pg_port=free_port(),
        redis_port=free_port(),
        instances={"gateway": 1, "auth": 1, "users": 1, "private_chat": 1, "qr_ws": 1, "events": 2},
        env={
            "DB_POOL_SIZE": "32",
            "NGINX_ACCESS_LOG": "0",
            "SEND_RATE_LIMIT": "0",
            "START_CHAT_RATE_LIMIT": "0",
            "EVENTS_HEARTBEAT_INTERVAL_MS": str(BENCH_HEARTBEAT_MS),
            "LOG_LEVEL": "WARNING",
        },
    )
    stack = Stack(config)
    stop_on_termination()
    started = time.time()
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "note": args.note,
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": machine(),
        "versions": versions(),
        "heartbeat_interval_ms": BENCH_HEARTBEAT_MS,
    }
    try:
        stack.start()
        assert stack.database_url
        data = asyncio.run(
            seed(
                stack.database_url,
                data_dir / "keys",
                pairs=max(args.sessions, args.idle_sessions) // 2,
                big_messages=10,
            )
        )
        bench = Bench(stack, data.users, seed_chats(data), args)
        gc.collect()
        uvloop.run(bench.run())
        meta["seconds"] = round(time.time() - started, 1)
        meta["machine"]["loadavg_after"] = os.getloadavg()
        print(write_results(args, bench.results, meta))
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
