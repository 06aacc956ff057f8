"""The results: machine and versions, one row per scenario, the targets, as JSON and markdown."""

import os
import platform
import re
import subprocess
from importlib import metadata
from typing import Any

from bench.tools import Result
from devstack.config import REPO_ROOT
from devstack.system import find_nginx, find_postgres_bindir

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "asyncpg",
    "orjson",
    "pydantic",
)

TITLES = {
    "nginx": "5. nginx ceiling (`return 200`)",
    "auth": "4. auth: GET /gateway/get-token/",
    "floor_auth": "10. floor: chat-list?limit=1 with auth_request",
    "floor_noauth": "11. floor: the same without auth_request",
    "read": "2. read: newest 50 of 100k",
    "deep_cursor": "3. deep page by cursor",
    "deep_offset": "3. deep page by offset (reported only)",
    "send": "1. send: POST add-message",
    "send_nolimit": "12. send with the rate limiter off (SEND_RATE_LIMIT=0; pairs in detail)",
    "edit": "13. edit: PATCH a message",
    "send_scraped": "14. send while every /metrics is scraped each second (pairs in detail)",
    "login": "9. password log-ins (while send runs)",
    "send_during_login": "9. send while log-ins run",
    "qr": "8. QR logins (2 websockets, mint, accept, exchange)",
    "pg_write": "6. write ceiling: pgbench INSERT",
    "pg_read": "7. read ceiling: pgbench newest-50 SELECT",
}


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""


def environment(*, stack_workers: int, stack_instances: int = 1) -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    bindir = find_postgres_bindir()
    versions = {
        "python": platform.python_version(),
        "nginx": _run([str(find_nginx()), "-v"]),
        "postgres": _run([str(bindir / "postgres"), "--version"]),
        "pgbench": _run([str(bindir / "pgbench"), "--version"]),
        "wrk": _run(["wrk", "-v"]),
        "kernel": platform.release(),
    }
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "missing"
    commit = _run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "versions": versions,
        "commit": commit,
        "service_workers": stack_workers,
        "service_instances": stack_instances,
        "nginx_access_log": "on" if os.environ.get("NGINX_ACCESS_LOG", "1") != "0" else "off",
        "nginx_auth_cache": os.environ.get("NGINX_AUTH_CACHE_SECONDS", "default"),
    }


def targets(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def rps(name: str) -> float | None:
        return rows[name]["rps"] if name in rows else None

    def ratio(a: str, b: str, field: str = "rps") -> float | None:
        if a in rows and b in rows and rows[b][field]:
            return float(rows[a][field]) / float(rows[b][field])
        return None

    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, bound: float, kind: str) -> None:
        met = None if value is None else (value >= bound if kind == ">=" else value <= bound)
        out.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "bound": f"{kind} {bound}",
                "met": met,
            }
        )

    clean = all(r["errors"] == 0 and r["non2xx"] == 0 for r in rows.values())
    out.append(
        {"target": "zero errors and zero non-2xx everywhere", "value": clean, "bound": "true", "met": clean}
    )
    # Issue 14's targets (default settings, ratios to the ceilings of the same run).
    add("auth hop: 10 / 11 (rps)", ratio("floor_auth", "floor_noauth"), 0.8, ">=")
    add("send / write ceiling (rps)", ratio("send", "pg_write"), 0.10, ">=")
    add("send p99 at 32 connections (ms)", rows["send"]["p99_ms"] if "send" in rows else None, 30.0, "<=")
    add("read / read ceiling (rps)", ratio("read", "pg_read"), 0.08, ">=")
    add("deep cursor rps / read rps (within 1.2x)", ratio("deep_cursor", "read"), 0.833, ">=")
    add("send p99 during log-ins / alone", ratio("send_during_login", "send", "p99_ms"), 3.0, "<=")
    read_cpu = rows.get("read", {}).get("detail", {}).get("cpu", {}).get("cpu_ms_per_request", {})
    # The Python services' processes (every instance), without PostgreSQL, nginx, Redis and wrk.
    services_ms = (
        sum(v for k, v in read_cpu.items() if k not in ("postgres", "nginx", "redis", "load tool")) or None
    )
    add("services' CPU per page (ms)", services_ms, 1.2, "<=")
    pg_read_cpu = rows.get("pg_read", {}).get("detail", {}).get("cpu", {}).get("cpu_ms_per_request", {})
    pg_ratio = (
        read_cpu["postgres"] / pg_read_cpu["postgres"]
        if read_cpu.get("postgres") and pg_read_cpu.get("postgres")
        else None
    )
    add("PostgreSQL CPU per page / per pgbench SELECT", pg_ratio, 3.0, "<=")
    scraped = (
        rows["send_scraped"]["detail"].get("scraped_plain_rps_ratio_median")
        if "send_scraped" in rows
        else None
    )
    add("send with /metrics scraped each second / without (median of pairs)", scraped, 0.98, ">=")
    # Measured in pairs of runs back to back (bench.run.limiter_rounds); the send row alone would
    # compare runs minutes apart.
    paired = (
        rows["send_nolimit"]["detail"].get("limiter_on_off_rps_ratio_median")
        if "send_nolimit" in rows
        else None
    )
    add("send with the rate limiter / without (rps, median of pairs)", paired, 0.9, ">=")
    del rps
    return out


def build(
    meta: dict[str, Any], results: list[Result], rss: dict[str, int], baseline: dict[str, Any] | None
) -> dict[str, Any]:
    rows = {r.name: r.as_dict() for r in results}
    document: dict[str, Any] = {
        "meta": meta,
        "rows": rows,
        "targets": targets(rows),
        "rss_mib": {name: round(kib / 1024, 1) for name, kib in rss.items()},
    }
    if baseline is not None:
        document["baseline"] = {
            "meta": baseline.get("meta"),
            "rows": baseline.get("rows"),
            "targets": baseline.get("targets"),
        }
    return document


def markdown(document: dict[str, Any], *, baseline_name: str | None) -> str:
    meta = document["meta"]
    rows = document["rows"]
    base_rows = (document.get("baseline") or {}).get("rows") or {}
    load = meta["load"]
    lines = [
        f"# Benchmark run {meta['started_at']}",
        "",
        f"- machine: {meta['nproc']} × {meta['cpu_model']}; load average before {meta['load_before']}, "
        f"after {meta['load_after']}",
        f"- `uptime` at the end: `{meta['uptime']}`",
        f"- load: {load['connections']} connections, {load['threads']} threads, {load['duration_s']} s "
        f"after a {load['warmup_s']} s warm-up (log-ins: {load['login_connections']} connections; QR: "
        f"{load['qr_concurrency']} concurrent flows)",
        f"- instances per service: {meta.get('service_instances', 1)}; workers per instance: "
        f"{meta['service_workers']}; DB_POOL_SIZE {meta.get('db_pool_size', 10)}; "
        f"nginx auth cache {meta['nginx_auth_cache']} s; nginx access log "
        f"{meta.get('nginx_access_log', 'off')}; commit {meta['commit']}; "
        f"note: {meta.get('note') or '-'}",
        "- versions: " + ", ".join(f"{k} {_short(v)}" for k, v in meta["versions"].items()),
        "",
    ]
    header = "| scenario | req/s | p50 ms | p99 ms | errors | non-2xx | CPU ms/req (top 3) | other tests |"
    rule = "|---|---:|---:|---:|---:|---:|---|---:|"
    if base_rows:
        header += " before req/s | before p50 | before p99 |"
        rule += "---:|---:|---:|"
    lines += [header, rule]
    for name, row in rows.items():
        line = (
            f"| {TITLES.get(name, name)} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['errors']} | {row['non2xx']} | {_top_cpu(row)} "
            f"| {row['detail'].get('other_pytest_processes', '-')} |"
        )
        if base_rows:
            before = base_rows.get(name)
            line += (
                f" {before['rps']:.0f} | {before['p50_ms']:.2f} | {before['p99_ms']:.2f} |"
                if before
                else " - | - | - |"
            )
        lines.append(line)
    lines += ["", "## Targets", "", "| target | value | bound | met |" + (" before |" if base_rows else ""),
              "|---|---:|---|---|" + ("---:|" if base_rows else "")]  # fmt: skip
    base_targets = {t["target"]: t for t in (document.get("baseline") or {}).get("targets") or []}
    for target in document["targets"]:
        met = {True: "yes", False: "**no**", None: "not run"}[target["met"]]
        line = f"| {target['target']} | {target['value']} | {target['bound']} | {met} |"
        if base_rows:
            before = base_targets.get(target["target"])
            line += f" {before['value'] if before else '-'} |"
        lines.append(line)
    lines += ["", "## Memory (RSS after the run, MiB)", "", "| process | RSS |", "|---|---:|"]
    lines += [f"| {name} | {mib} |" for name, mib in document["rss_mib"].items()]
    if baseline_name:
        lines += ["", f"Before figures: `{baseline_name}`."]
    return "\n".join(lines) + "\n"


def _top_cpu(row: dict[str, Any]) -> str:
    spent = (row["detail"].get("cpu") or {}).get("cpu_ms_per_request") or {}
    top = sorted(((v, k) for k, v in spent.items() if k != "load tool"), reverse=True)[:3]
    return ", ".join(f"{name} {value:.2f}" for value, name in top) or "-"


def _short(value: str) -> str:
    match = re.search(r"\d+(\.\d+)+\S*", value)
    return match.group(0) if match else value
