"""Results as markdown tables (the JSON beside them holds every figure)."""

from pathlib import Path
from typing import Any


def one_line(result: dict[str, Any]) -> str:
    ledger = result["ledger"]
    return (
        f"{result['requests']} requests, {result['failed']} failed {result['failed_by_status'] or ''}; "
        f"good again after {result['recovery_seconds']} s; slowest {result['slowest_seconds']} s; "
        f"ledger {'ok' if ledger['ok'] else 'FAILED'} "
        f"(acked {ledger['sends']['acknowledged']}, lost {ledger['sends']['acknowledged_not_stored']}, "
        f"doubled {ledger['sends']['stored_twice']}; events missing {ledger['events']['missing']}, "
        f"duplicated {ledger['events']['duplicated']}; half-made sign-ups {ledger['signups']['half_made']})"
        + (f"; PROBLEMS: {'; '.join(result['problems'])}" if result["problems"] else "")
    )


def _meta_lines(document: dict[str, Any]) -> list[str]:
    meta = document["meta"]
    versions = ", ".join(f"{k} {str(v).split(chr(10))[0][:40]}" for k, v in meta["versions"].items())
    quiet = "quiet" if meta["other_pytest_processes"] == 0 else "shared with other test runs (noisy)"
    return [
        f"- run: `python -m reliability {meta['command']}` at {meta['started_at']}, commit {meta['commit']}",
        f"- machine: {meta['nproc']} × {meta['cpu_model']}; load average before {meta['load_before']}, "
        f"after {meta['load_after']}; other pytest processes seen: {meta['other_pytest_processes']} "
        f"({quiet})",
        f"- `uptime` at the end: `{meta['uptime']}`",
        f"- instances: {meta['instances']}; seed: {meta['seed']}",
        f"- mix: {document['rate_per_s']} requests/s (sends with nonces 40 %, page reads 35 %, chat "
        f"lists 25 %) + sign-ups + identified event sessions"
        + (f"; measured capacity of the mix {document['capacity_per_s']}/s (the mix runs at half)"
           if document.get("capacity_per_s") else ""),
        f"- versions: {versions}",
    ] + ([f"- note: {meta['note']}"] if meta.get("note") else [])  # fmt: skip


def markdown(document: dict[str, Any], *, out: Path, label: str) -> str:
    lines = [f"# Reliability: {label}", "", *_meta_lines(document), ""]
    if "scenarios" in document:
        lines += [
            "| scenario | fault | requests | failed (by status) | 500s | no answer | good again after "
            "(target ≤ 5 s) | slowest answer | sends acked / retried | lost / doubled | event deliveries "
            "checked / missing / doubled | resumes | sign-ups acked / half-made | targets |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, r in document["scenarios"].items():
            led = r["ledger"]
            failed = ", ".join(f"{k}: {v}" for k, v in r["failed_by_status"].items()) or "0"
            lines.append(
                f"| {name} | {r['what']} | {r['requests']} | {r['failed']} ({failed}) | {r['failed_500']} "
                f"| {r['failed_no_answer']} | {r['recovery_seconds']} s | {r['slowest_seconds']} s "
                f"| {led['sends']['acknowledged']} / {led['sends']['retried']} "
                f"| {led['sends']['acknowledged_not_stored']} / {led['sends']['stored_twice']} "
                f"| {led['events']['deliveries_expected']} / {led['events']['missing']} / "
                f"{led['events']['duplicated']} | {led['events']['resumes']} "
                f"| {led['signups']['acknowledged']} / {led['signups']['half_made']} "
                f"| {'met' if not r['problems'] else '**' + '; '.join(r['problems']) + '**'} |"
            )
        lines += [
            "",
            "Failed requests count every attempt, retries included (a send retried with its nonce after a "
            "503 counts once per failed attempt). \"Good again after\" is the start of the last failed "
            "request, measured from the end of the fault (for a SIGKILL, the kill itself).",
        ]
    if "soak" in document:
        lines += soak_markdown(document["soak"], out=out)
    return "\n".join(lines) + "\n"


def soak_markdown(soak: dict[str, Any], *, out: Path) -> list[str]:
    lines = [
        f"## Soak: {soak['minutes']} minutes",
        "",
        f"- requests: {soak['requests']}, failed: {soak['failed']} ({soak['failed_by_status'] or 'none'})",
        f"- answers/s (median of the 10 s windows): minutes 2–7 {soak['throughput_first']}/s, last 5 "
        f"minutes {soak['throughput_last']}/s",
        f"- p99 (median of the 10 s windows' p99): minutes 2–7 {soak['p99_first_ms']} ms, last 5 minutes "
        f"{soak['p99_last_ms']} ms (ratio {soak['p99_ratio']}, target ≤ 1.5)",
        f"- ledger: {'ok' if soak['ledger']['ok'] else 'FAILED'}: {soak['ledger']}",
        f"- bytes per stored message (the messages table with its indexes, grown over messages added): "
        f"{soak.get('bytes_per_message')}",
        "",
        "RSS at rest: the lowest sample of minutes 2–7 and of the last 5 minutes (momentary work shows "
        "on top of it: an argon2id hash of a sign-up holds 64 MiB while it runs; a leak raises the floor).",
        "",
        "| process | RSS minutes 2–7 (MiB) | RSS last 5 min (MiB) | growth (target ≤ 10 %) | peak (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in soak["rss"].items():
        lines.append(
            f"| {name} | {row['at_2min_mib']} | {row['end_mib']} | {row['growth_pct']} % "
            f"{'' if row['growth_pct'] <= 10 else '**over**'} | {row.get('peak_mib', '')} |"
        )
    cpu = soak.get("cpu")
    if cpu:
        lines += [
            "",
            f"CPU per answered request over the soak ({cpu['answers']} answers in {cpu['seconds']} s; "
            "the mix's requests plus the sessions' events and heartbeats):",
            "",
            "| process | CPU ms per answer | cores busy |",
            "|---|---:|---:|",
        ]
        for name, value in sorted(cpu["cpu_ms_per_answer"].items(), key=lambda item: -item[1]):
            lines.append(f"| {name} | {value} | {cpu['cores_busy'][name]} |")
    lines += ["", "| size | at 2 min | at the end | largest |", "|---|---:|---:|---:|"]
    for name, row in soak["sizes"].items():
        lines.append(f"| {name} | {row['at_2min']} | {row['end']} | {row.get('max', '')} |")
    lines += [
        "",
        f"Targets: {'all met' if soak['all_met'] else '**not all met**: ' + '; '.join(soak['problems'])}",
        "",
        f"![throughput, p99 and RSS over time]({soak['plot']})",
        "",
    ]
    return lines
