"""The collector's settings A/B on one running stack: `python -m bench.gc_ab [--modes none,freeze]
[--scenario read] [--rounds 3]`.

Starts `python -m bench --serve` with `bench/gc_probe` on PYTHONPATH, so every service process
switches its collector's settings live (see gc_probe/sitecustomize.py), then runs wrk windows of
one scenario, the modes alternating, and prints one JSON line per window: requests/s, p99, and
the CPU milliseconds per request of the chat service and the gateway (from /proc, each process
with its children). Comparing modes within one stack and minutes keeps the machine's drift out
of the difference (bench/results/README.md, "Issue 14, fifth run").
"""

import argparse
import ast
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.tools import cpu_seconds, finish_wrk, start_wrk

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="none,freeze")
    parser.add_argument("--scenario", default="read")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=12)
    args = parser.parse_args()
    modes = args.modes.split(",")
    probe_dir = Path(tempfile.mkdtemp(prefix="gc-probe-"))
    path = [str(REPO_ROOT / "bench" / "gc_probe"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)), "GC_PROBE_DIR": str(probe_dir)}
    windows = len(modes) * args.rounds * (args.seconds + 6)
    serve = subprocess.Popen(
        [sys.executable, "-m", "bench", "--serve", str(windows + 60)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        line = ""
        while "request files in" not in line:
            line = serve.stdout.readline()
            if not line:
                raise SystemExit("bench --serve stopped before serving")
        base_url = re.search(r"serving (http://\S+)", line).group(1)  # type: ignore[union-attr]
        work = Path(re.search(r"request files in (\S+);", line).group(1))  # type: ignore[union-attr]
        pids = ast.literal_eval(re.search(r"pids (\{.*\})", line).group(1))  # type: ignore[union-attr]
        groups = {name: pids[name] for name in ("private_chat1", "gateway1")}
        requests = work / f"{args.scenario}.txt"
        for round_ in range(args.rounds):
            for mode in modes:
                (probe_dir / "mode").write_text(mode)
                time.sleep(2)
                finish_wrk("warm-up", start_wrk(base_url, requests, 32, 2, 3))
                before = cpu_seconds(groups, None)
                result = finish_wrk(args.scenario, start_wrk(base_url, requests, 32, 2, args.seconds))
                after = cpu_seconds(groups, None)
                count = result.requests or 1
                print(json.dumps({
                    "round": round_, "mode": mode, "scenario": args.scenario,
                    "rps": round(result.rps, 1), "p99_ms": result.p99_ms,
                    "chat_ms": round((after["private_chat1"] - before["private_chat1"]) / count * 1000, 3),
                    "gateway_ms": round((after["gateway1"] - before["gateway1"]) / count * 1000, 3),
                }), flush=True)  # fmt: skip
    finally:
        serve.send_signal(signal.SIGTERM)  # the stack stops on SIGTERM (devstack.stack)
        serve.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
