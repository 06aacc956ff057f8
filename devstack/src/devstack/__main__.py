"""`python -m devstack run|up|down|restart|status|clean` (the Makefile's run, up, down, restart and
clean). `supervise` is what `up` runs detached."""

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from devstack.config import StackConfig, service
from devstack.console import Console
from devstack.errors import StackError
from devstack.stack import (
    Stack,
    control_request,
    read_state,
    running_supervisor,
    shared_dir_for,
    stop_from_state,
    stop_on_termination,
)
from devstack.system import MissingProgram

# Entry points the banner lists besides every service's API docs: (label, path under nginx).
EXTRA_ENTRY_POINTS: list[tuple[str, str]] = [("QR log-in page", "/qr/")]


def banner(config: StackConfig, *, detached: bool) -> str:
    url = config.public_base_url
    rows = [(f"API docs ({spec.name})", f"{url}{spec.docs}") for spec in config.services() if spec.docs]
    rows += [(label, f"{url}{path}") for label, path in EXTRA_ENTRY_POINTS]
    # Metrics and readiness are on each instance's own loopback port, never through nginx.
    for spec in config.services():
        ports = [config.ports[name] for name in config.instances_of(spec.name)]
        rows.append((f"metrics ({spec.name})", ", ".join(f"http://127.0.0.1:{p}/metrics" for p in ports)))
    rows.append(("nginx status", f"http://127.0.0.1:{config.status_port}/stub_status"))
    rows.append(("logs", f"{config.data_dir / 'logs'}/"))
    width = max(len(label) for label, _ in rows)
    lines = [f"\nThe stack is up: {url}"]
    lines += [f"  {label:<{width}}  {target}" for label, target in rows]
    lines.append("Stop it with `make down`." if detached else "Ctrl-C stops it all.")
    return "\n".join(lines) + "\n"


def refuse_if_running(config: StackConfig, console: Console) -> bool:
    pid = running_supervisor(config.data_dir)
    if pid is not None:
        state = read_state(config.data_dir) or {}
        print(
            f"devstack: a stack is already running from {config.data_dir} (supervisor pid {pid}, "
            f"{state.get('public_base_url', '')}); stop it with `make down` first, or give this one "
            "another DATA_DIR and HTTP_PORT",
            file=sys.stderr,
        )
        return True
    if read_state(config.data_dir) is not None:
        console.say("a previous stack in this folder did not stop cleanly; stopping what it left")
        stop_from_state(config.data_dir)
    return False


def run(config: StackConfig, *, detached_child: bool) -> int:
    console = Console()
    if refuse_if_running(config, console):
        return 1
    stack = Stack(config, foreground=not detached_child, console=console)
    stop_on_termination()
    started = time.monotonic()
    try:
        console.step("bootstrap", "system packages and .venv ready")
        stack.start()
        console.say(f"started in {time.monotonic() - started:.1f} s")
        print(banner(config, detached=detached_child), flush=True)
        stack.wait()
        return 0
    except KeyboardInterrupt:
        console.say("stopping…")
        return 0 if stack.status == "up" else 130
    finally:
        stack.stop()


def up(config: StackConfig) -> int:
    """Runs `supervise` detached, echoes its steps, returns once every part answers."""
    console = Console()
    if refuse_if_running(config, console):
        return 1
    log_dir = config.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "devstack.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "devstack", "supervise"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "DATA_DIR": str(config.data_dir)},
        )  # fmt: skip
    seen = b""
    with log_path.open("rb") as follow:
        follow.seek(offset)
        while True:
            chunk = follow.read()
            if chunk:
                seen += chunk
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            state = read_state(config.data_dir) or {}
            up_now = state.get("supervisor") == child.pid and state.get("status") == "up"
            if up_now and b"`make down`" in seen:
                return 0
            if child.poll() is not None:
                rest = follow.read().decode(errors="replace")
                sys.stdout.write(rest)
                print(f"devstack: the stack did not start; its log: {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.2)


def clean(config: StackConfig) -> int:
    import shutil

    stop_from_state(config.data_dir)
    marker = config.data_dir / "shared_dir"
    shared = Path(marker.read_text().strip()) if marker.exists() else shared_dir_for(config.data_dir)
    if shared != config.data_dir and shared.exists():
        shutil.rmtree(shared)
    shutil.rmtree(config.data_dir, ignore_errors=True)
    print(f"removed {config.data_dir}" + (f" and {shared}" if shared != config.data_dir else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    parser.add_argument("command", choices=["run", "up", "down", "supervise", "restart", "status", "clean"])
    parser.add_argument("service", nargs="?", help="restart: the service whose instances to roll")
    args = parser.parse_args(argv)
    config = StackConfig.from_env()
    try:
        if args.command == "run":
            return run(config, detached_child=False)
        if args.command == "supervise":
            return run(config, detached_child=True)
        if args.command == "up":
            return up(config)
        if args.command == "down":
            stopped = stop_from_state(config.data_dir)
            print("stack stopped" if stopped else "no stack was running")
            return 0
        if args.command == "status":
            pid = running_supervisor(config.data_dir)
            print(f"running (supervisor pid {pid})" if pid else "not running")
            return 0 if pid else 1
        if args.command == "clean":
            return clean(config)
        if not args.service:
            parser.error("restart needs a service name (e.g. private_chat)")
        try:
            service(args.service)
        except StopIteration:
            names = ", ".join(spec.name for spec in config.services())
            parser.error(f"unknown service {args.service!r}; one of: {names}")
        failed = False
        for line in control_request(config.data_dir, {"command": "restart", "service": args.service}):
            print(f"devstack: {line}", flush=True)
            failed = failed or line.startswith("error:")
        return 1 if failed else 0
    except (StackError, MissingProgram) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an unforeseen failure: one line here, the trace in a file
        trace = config.data_dir / "logs" / "devstack-error.log"
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text(traceback.format_exc())
        print(f"devstack: unexpected error: {type(exc).__name__}: {exc} (trace: {trace})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
