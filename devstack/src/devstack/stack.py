"""Starts and stops the whole stack: database, migrations, services, nginx."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from devstack.config import REPO_ROOT, StackConfig
from devstack.keys import ensure_secret, ensure_signing_keys
from devstack.migrations import MigrationError, migrate
from devstack.nginx import Nginx
from devstack.postgres import PrivatePostgres


@dataclass
class ServiceSpec:
    name: str
    app: str
    port: int
    env: dict[str, str]


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, config: StackConfig, *, foreground: bool = False) -> None:
        self.config = config
        self.foreground = foreground
        self.log_dir = config.data_dir / "logs"
        self.state_file = config.data_dir / "stack.json"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.postgres: PrivatePostgres | None = None
        self.database_url = config.database_url
        self._log_threads: list[threading.Thread] = []

    # ---- building blocks -------------------------------------------------------------------
    def _service_env(self) -> dict[str, str]:
        keys = self.config.data_dir / "keys"
        env = {**os.environ, **self.config.env}
        env["DATABASE_URL"] = self.database_url or ""
        if not (env.get("AUTH_JWT_PRIVATE_KEY") or env.get("AUTH_JWT_PRIVATE_KEY_FILE")):
            private_path, public_path = ensure_signing_keys(keys)
            env["AUTH_JWT_PRIVATE_KEY_FILE"] = str(private_path)
            env.setdefault("GATEWAY_JWT_PUBLIC_KEY_FILE", str(public_path))
        if not (env.get("AUTH_QR_TICKET_KEY") or env.get("AUTH_QR_TICKET_KEY_FILE")):
            env["AUTH_QR_TICKET_KEY_FILE"] = str(ensure_secret(keys / "qr_ticket.key"))
        ports = self.config.service_ports
        env.setdefault("AUTH_USERS_SERVICE_URL", f"http://127.0.0.1:{ports['users']}")
        env.setdefault("QR_AUTH_SERVICE_URL", f"http://127.0.0.1:{ports['auth']}")
        env.setdefault("USERS_MEDIA_ROOT", str(self.config.data_dir / "media"))
        env.setdefault("USERS_PUBLIC_BASE_URL", self.config.public_base_url)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def services(self) -> list[ServiceSpec]:
        env = self._service_env()
        ports = self.config.service_ports
        specs = [
            ServiceSpec("gateway", "gateway.main:create_app", ports["gateway"], env),
            ServiceSpec("auth", "auth_service.main:create_app", ports["auth"], env),
            ServiceSpec("users", "users_service.main:create_app", ports["users"], env),
            ServiceSpec("private_chat", "private_chat_service.main:create_app", ports["private_chat"], env),
        ]
        for index, port in enumerate(self.config.qr_ports):
            instance_env = {**env, "QR_INSTANCE_ID": f"qr{index + 1}"}
            specs.append(
                ServiceSpec(f"qr_ws{index + 1}", "qr_ws_service.main:create_app", port, instance_env)
            )
        return specs

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stdout: int | IO[bytes]
        if self.foreground:
            stdout = subprocess.PIPE
        else:
            stdout = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        if self.foreground:
            thread = threading.Thread(target=_prefix_lines, args=(name, process.stdout), daemon=True)
            thread.start()
            self._log_threads.append(thread)
        else:
            assert not isinstance(stdout, int)
            stdout.close()
        self.processes[name] = process

    def migrate(self) -> None:
        try:
            migrate(self.database_url or "")
        except MigrationError as exc:
            raise StackError(str(exc)) from exc

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.data_dir.chmod(0o755)
        try:
            if not self.database_url:
                self.postgres = PrivatePostgres(
                    self.config.data_dir / "postgres",
                    port=self.config.pg_port,
                    for_tests=self.config.pg_for_tests,
                )
                self.database_url = self.postgres.start()
            self.migrate()
            for spec in self.services():
                self._spawn(spec.name, self._service_command(spec), spec.env)
            self._spawn(
                "nginx",
                Nginx(self.config, self.config.data_dir / "media").command(),
                dict(os.environ),
            )
            self._write_state()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _service_command(self, spec: ServiceSpec) -> list[str]:
        # A QR hub lives in one process's memory and nginx routes a client_id to an instance, not
        # to a worker: websocket instances always run one worker (scale them with QR_INSTANCES).
        workers = 1 if spec.name.startswith("qr_ws") else self.config.workers
        return [
            sys.executable, "-m", "uvicorn", spec.app, "--factory",
            "--host", "127.0.0.1", "--port", str(spec.port),
            "--no-access-log", "--loop", "uvloop", "--http", "httptools",
            "--workers", str(workers), "--timeout-graceful-shutdown", "5",
            # Websocket frames past this are refused by the protocol layer itself; the QR
            # service's own, smaller limit (QR_MAX_FRAME_BYTES) answers in its protocol.
            "--ws-max-size", "65536",
        ]  # fmt: skip

    def stop_service(self, name: str) -> None:
        """Stop one service (tests use it to check behaviour when a dependency is down)."""
        process = self.processes.pop(name)
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def start_service(self, name: str, timeout: float = 30.0) -> None:
        spec = next(spec for spec in self.services() if spec.name == name)
        self._spawn(spec.name, self._service_command(spec), spec.env)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        checks = {
            spec.name: f"http://127.0.0.1:{spec.port}/healthz"
            for spec in self.services()
            if spec.name in self.processes
        }
        checks["nginx"] = f"http://127.0.0.1:{self.config.http_port}/nginx-health"
        deadline = time.monotonic() + timeout
        pending = dict(checks)
        while pending:
            for name, url in list(pending.items()):
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    raise StackError(
                        f"{name} exited with code {process.returncode}; see {self.log_dir / (name + '.log')}"
                        + "\n"
                        + self.tail_log(name)
                    )
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                        if response.status == 200:
                            del pending[name]
                except (urllib.error.URLError, OSError):
                    pass
            if pending and time.monotonic() > deadline:
                raise StackError(f"not healthy after {timeout}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.2)

    def tail_log(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _write_state(self) -> None:
        state = {
            "pids": {name: process.pid for name, process in self.processes.items()},
            "postgres_root": str(self.postgres.root) if self.postgres else None,
            "database_url": self.database_url,
            "http_port": self.config.http_port,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        # nginx first (no new requests), then services, then the database.
        order = ["nginx", *[name for name in self.processes if name != "nginx"]]
        for name in order:
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        for name in order:
            process = self.processes.get(name)
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.processes.clear()
        if self.postgres is not None:
            self.postgres.stop()
        for thread in self._log_threads:
            thread.join(timeout=2)
        self.state_file.unlink(missing_ok=True)

    def watch(self) -> int:
        """Foreground mode: return when any process exits (its exit code) ."""
        while True:
            for name, process in self.processes.items():
                code = process.poll()
                if code is not None:
                    print(
                        f"devstack: {name} exited with code {code}; stopping the stack",
                        file=sys.stderr,
                    )
                    return code or 1
            time.sleep(0.5)


def stop_from_state(data_dir: Path) -> bool:
    """`make down`: stop what a background `make up` started, using the state it left."""
    state_file = data_dir / "stack.json"
    if not state_file.exists():
        return False
    state = json.loads(state_file.read_text())
    pids = state.get("pids", {})
    ordered = [pids.pop("nginx")] if "nginx" in pids else []
    ordered += list(pids.values())
    for pid in ordered:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for pid in ordered:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    if state.get("postgres_root"):
        PrivatePostgres(Path(state["postgres_root"])).stop()
    state_file.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        # Not our child: check whether it is a zombie via /proc.
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


COLOURS = [
    "\033[36m",
    "\033[32m",
    "\033[33m",
    "\033[35m",
    "\033[34m",
    "\033[91m",
    "\033[92m",
    "\033[93m",
]


def _prefix_lines(name: str, stream: IO[bytes] | None) -> None:
    if stream is None:
        return
    colour = COLOURS[hash(name) % len(COLOURS)] if sys.stdout.isatty() else ""
    reset = "\033[0m" if colour else ""
    for raw in iter(stream.readline, b""):
        sys.stdout.write(f"{colour}{name:>13} |{reset} {raw.decode(errors='replace').rstrip()}\n")
        sys.stdout.flush()


@contextmanager
def running(config: StackConfig) -> Iterator[Stack]:
    stack = Stack(config)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
