"""The load tools: wrk (HTTP), pgbench (database ceilings), and an asyncio client for the QR flow."""

import asyncio
import json
import os
import re
import resource
import secrets
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

LUA = Path(__file__).with_name("lua") / "requests.lua"


@dataclass
class Load:
    connections: int
    threads: int
    duration: float
    warmup: float


@dataclass
class Result:
    name: str
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    non2xx: int
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tool": self.tool,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
            "non2xx": self.non2xx,
            "detail": self.detail,
        }


def cpu_seconds(groups: dict[str, int], postmaster: int | None) -> dict[str, float]:
    """CPU time (user + system) used so far by each process group (a service and its workers,
    nginx and its workers) and by PostgreSQL (the postmaster, its reaped and its live backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    by_group: dict[str, float] = dict.fromkeys(groups, 0.0)
    pgid_names = {pgid: name for name, pgid in groups.items()}
    postgres = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        ppid, pgid = int(fields[1]), int(fields[2])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        if pgid in pgid_names:
            by_group[pgid_names[pgid]] += (utime + stime + cutime + cstime) / tick
        if postmaster is not None and pid == postmaster:
            postgres += (utime + stime + cutime + cstime) / tick
        elif postmaster is not None and ppid == postmaster:
            postgres += (utime + stime) / tick
    if postmaster is not None:
        by_group["postgres"] = postgres
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_group["load tool"] = children.ru_utime + children.ru_stime
    return by_group


def cpu_per_request(
    before: dict[str, float], after: dict[str, float], requests: int, seconds: float
) -> dict[str, Any]:
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    busy = {name: value for name, value in used.items() if value > 0.005}
    return {
        "cpu_ms_per_request": {
            name: round(1000 * value / max(requests, 1), 3) for name, value in busy.items()
        },
        "cores_busy": {name: round(value / seconds, 2) for name, value in busy.items()},
        "cores_busy_total": round(sum(busy.values()) / seconds, 2),
    }


def write_requests(path: Path, lines: list[tuple[str, str, str, str, str]]) -> Path:
    """Lines for lua/requests.lua: method, path, Authorization, X-User-Id, JSON body."""
    path.write_text("".join("\t".join(line) + "\n" for line in lines))
    return path


def start_wrk(
    base_url: str, requests_file: Path, connections: int, threads: int, seconds: float
) -> subprocess.Popen[str]:
    command = [
        "wrk", "-c", str(connections), "-t", str(min(threads, connections)),
        "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(LUA), base_url,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_REQUESTS": str(requests_file)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(name: str, process: subprocess.Popen[str]) -> Result:
    stdout, stderr = process.communicate(timeout=600)
    match = re.search(r"^BENCH_JSON (\{.*\})$", stdout, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed for {name}: {stdout}\n{stderr}")
    raw = json.loads(match.group(1))
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    seconds = raw["duration_us"] / 1e6
    return Result(
        name=name,
        tool="wrk",
        rps=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        requests=raw["requests"],
        errors=errors,
        non2xx=raw["non2xx"],
        detail=raw,
    )


def wrk(name: str, base_url: str, requests_file: Path, load: Load) -> Result:
    if load.warmup > 0:
        finish_wrk(name, start_wrk(base_url, requests_file, load.connections, load.threads, load.warmup))
    return finish_wrk(name, start_wrk(base_url, requests_file, load.connections, load.threads, load.duration))


def pgbench(
    name: str,
    bindir: Path,
    port: int,
    database: str,
    script: str,
    load: Load,
    *,
    work_dir: Path,
    password: str,
) -> Result:
    """pgbench as the cluster's superuser (every connection needs its password: scram)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PGPASSWORD": password}
    script_file = work_dir / f"{name}.sql"
    script_file.write_text(script)
    base = [
        str(bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n",
        "-M", "prepared", "-c", str(load.connections), "-j", str(min(load.threads, load.connections)),
        "-f", str(script_file),
    ]  # fmt: skip
    if load.warmup > 0:
        subprocess.run(
            [*base, "-T", str(max(1, round(load.warmup))), database], check=True, capture_output=True, env=env
        )
    with tempfile.TemporaryDirectory(dir=work_dir) as log_dir:
        run = subprocess.run(
            [*base, "-T", str(max(1, round(load.duration))), "-l", "--log-prefix", f"{log_dir}/tx", database],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if run.returncode != 0:
            raise RuntimeError(f"pgbench failed for {name}: {run.stdout}\n{run.stderr}")
        latencies: list[int] = []
        for log in Path(log_dir).glob("tx*"):
            with log.open() as file:
                latencies += [int(line.split()[2]) for line in file if line.strip()]
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", run.stdout).group(1))  # type: ignore[union-attr]
    processed = int(re.search(r"number of transactions actually processed: (\d+)", run.stdout).group(1))  # type: ignore[union-attr]
    failed_match = re.search(r"number of failed transactions: (\d+)", run.stdout)
    failed = int(failed_match.group(1)) if failed_match else 0
    p50, p99 = percentiles(latencies, (50, 99))
    return Result(
        name=name,
        tool="pgbench",
        rps=tps,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        requests=processed,
        errors=failed,
        non2xx=0,
        detail={"stdout": run.stdout.strip().splitlines()[-12:]},
    )


def percentiles(values: list[int] | list[float], points: tuple[int, ...]) -> list[float]:
    if not values:
        return [0.0 for _ in points]
    ordered = sorted(values)
    return [float(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]) for p in points]


# ---- QR login: the one flow that needs websockets --------------------------------------------------
async def _qr_login(http: httpx.AsyncClient, ws_url: str, token: str) -> None:
    client_id = secrets.token_urlsafe(24)
    url = f"{ws_url}?client_id={client_id}"
    async with connect(url, open_timeout=10) as browser:
        await _expect(browser, "hello")
        async with connect(url, open_timeout=10) as phone:
            await _expect(phone, "hello")
            minted = await http.get("/auth/encrypt_user_data/", headers={"Authorization": f"Bearer {token}"})
            if minted.status_code != 200:
                raise RuntimeError(f"mint: {minted.status_code} {minted.text}")
            ticket = minted.json()["token"]
            await phone.send(json.dumps({"op": "pending_ticket", "encrypted_user_payload": ticket}))
            granted = await _expect(browser, "access granted")
    exchanged = await http.get(
        "/auth/qr_auth/", params={"client_id": client_id}, headers={"Authorization": granted["auth_token"]}
    )
    if exchanged.status_code != 200 or not exchanged.json().get("token"):
        raise RuntimeError(f"exchange: {exchanged.status_code} {exchanged.text}")


async def _expect(ws: Any, op: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if message.get("op") == op:
            return dict(message)
        if message.get("op") not in ("hello", "mobile connected", "heartbeat_ack"):
            raise RuntimeError(f"expected {op}, got {message}")


async def _qr_run(
    base_url: str, tokens: list[str], concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    ws_url = base_url.replace("http://", "ws://") + "/auth_events/qr_auth/"
    latencies: list[float] = []
    errors = 0
    counter = 0
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=15, limits=limits) as http:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal errors, counter
            while time.perf_counter() < deadline:
                counter += 1
                token = tokens[counter % len(tokens)]
                begun = time.perf_counter()
                try:
                    await _qr_login(http, ws_url, token)
                except Exception:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - begun)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def qr_logins(base_url: str, tokens: list[str], concurrency: int, load: Load) -> Result:
    if load.warmup > 0:
        asyncio.run(_qr_run(base_url, tokens, concurrency, load.warmup))
    latencies, errors, elapsed = asyncio.run(_qr_run(base_url, tokens, concurrency, load.duration))
    p50, p99 = percentiles(latencies, (50, 99))
    return Result(
        name="qr",
        tool="asyncio+websockets",
        rps=len(latencies) / elapsed,
        p50_ms=p50 * 1000,
        p99_ms=p99 * 1000,
        requests=len(latencies),
        errors=errors,
        non2xx=0,
        detail={
            "concurrency": concurrency,
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0,
        },
    )
