"""Starts, supervises and stops the whole stack: PostgreSQL, Redis, migrations, every instance
of every service, nginx.

One `Stack` object is the supervisor: a thread restarts any process that exits without being
asked to (with backoff), and a control socket lets `python -m devstack restart <service>` roll a
service's instances one at a time. `make run` runs it in the foreground, `make up` detached, the
tests inside the test session."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.config import REPO_ROOT, ServiceDef, StackConfig, port_is_free, service
from devstack.console import Console
from devstack.errors import StackError
from devstack.keys import ensure_secret, ensure_signing_keys
from devstack.migrations import MigrationError, migrate
from devstack.nginx import NGINX_TAKES_BACK_SECONDS, Nginx
from devstack.postgres import PrivatePostgres
from devstack.redis import PrivateRedis, redis_ping
from devstack.roles import SERVICE_ROLES
from devstack.system import is_root, user_can_enter

# Where a root user's stack keeps what other system users must reach (the PostgreSQL cluster,
# nginx's temp files, avatars) when the data folder is somewhere they cannot enter, like a
# clone in root's 0700 home.
SHARED_ROOT = Path("/var/lib/chat-dev")

# Supervisor backoff: 1 s, 2 s, 4 s ... capped, reset once a process has stayed up this long.
BACKOFF_CAP_SECONDS = 30.0
BACKOFF_RESET_SECONDS = 60.0
# How long uvicorn lets in-flight requests (and nginx's idle connections, closed by nginx after
# 4 s) finish after SIGTERM, and how long a stopping process may take in all.
GRACEFUL_SHUTDOWN_SECONDS = 8
STOP_TIMEOUT_SECONDS = 20.0


# Liveness: an instance that has answered /healthz once and then leaves this many probes in a row
# unanswered (each given the timeout, one round a second) is hung, not busy: its event loop is
# blocked or the process stopped. It is killed, and restarted as a crash is. A request nginx had
# sent it then fails over to another instance (a read) or gets nginx's 502 (a write), instead of
# waiting out nginx's 60 s read timeout.
LIVENESS_INTERVAL_SECONDS = 1.0
LIVENESS_TIMEOUT_SECONDS = 2.0
LIVENESS_MISSES = 3
# An instance that has not answered once within this long of its start is hung in its start (a
# deadlock at startup, a process stopped before its first answer), and is killed the same way.
LIVENESS_STARTUP_SECONDS = 60.0


def backoff_delay(failures: int) -> float:
    """Seconds before restarting a process that has exited `failures` times in quick succession."""
    return min(BACKOFF_CAP_SECONDS, 2.0**failures)


@dataclass(frozen=True)
class InstanceSpec:
    """One instance of a service, as `Stack.services()` lists them."""

    name: str  # gateway1, ...
    service: str  # gateway
    app: str
    port: int


@dataclass
class Managed:
    """A process the supervisor keeps running: a service instance, Redis or nginx."""

    name: str
    command: Callable[[], list[str]]
    env: dict[str, str]
    health: Callable[[], bool]
    spec: ServiceDef | None = None
    # Readiness (/readyz: its database and Redis answer), waited on at the first start; None: health.
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None
    wanted: bool = True  # False: stopped on purpose, not restarted
    started_at: float = 0.0
    failures: int = 0  # consecutive quick exits (backoff exponent)
    restart_at: float | None = None
    threads: list[threading.Thread] = field(default_factory=list)


def shared_dir_for(data_dir: Path) -> Path:
    """The data folder itself, unless running as root and postgres or nobody cannot enter it."""
    if not is_root() or all(user_can_enter(user, data_dir) for user in ("postgres", "nobody")):
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return SHARED_ROOT / digest


class Stack:
    def __init__(
        self, config: StackConfig, *, foreground: bool = False, console: Console | None = None
    ) -> None:
        self.config = config
        self.foreground = foreground
        self.console = console or Console(quiet=True)
        self.log_dir = config.data_dir / "logs"
        self.state_file = config.data_dir / "stack.json"
        self.managed: dict[str, Managed] = {}
        self.postgres: PrivatePostgres | None = None
        self.redis: PrivateRedis | None = None
        self.database_url = config.database_url
        # Each service's own role on the private cluster (devstack.roles); empty with DATABASE_URL.
        self.service_database_urls: dict[str, str] = {}
        self.redis_url = config.redis_url
        self.shared_dir = config.data_dir
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._liveness: threading.Thread | None = None
        # The liveness watch's view: per instance, the pid last probed, whether it has answered
        # since its start, and its misses in a row.
        self._liveness_seen: dict[str, tuple[int, bool, int]] = {}
        self._control: socket.socket | None = None
        self._control_thread: threading.Thread | None = None
        self.status = "starting"

    # ---- compatibility: running processes by name ---------------------------------------------
    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        with self._lock:
            return {
                name: item.process
                for name, item in self.managed.items()
                if item.process is not None and item.wanted
            }

    # ---- building blocks -------------------------------------------------------------------
    def _service_env(self) -> dict[str, str]:
        keys = self.config.data_dir / "keys"
        env = {**os.environ, **self.config.env}
        env["DATABASE_URL"] = self.database_url or ""
        env["REDIS_URL"] = self.redis_url or ""
        if not (env.get("AUTH_JWT_PRIVATE_KEY") or env.get("AUTH_JWT_PRIVATE_KEY_FILE")):
            private_path, public_path = ensure_signing_keys(keys)
            env["AUTH_JWT_PRIVATE_KEY_FILE"] = str(private_path)
            env.setdefault("GATEWAY_JWT_PUBLIC_KEY_FILE", str(public_path))
        if not (env.get("AUTH_QR_TICKET_KEY") or env.get("AUTH_QR_TICKET_KEY_FILE")):
            env["AUTH_QR_TICKET_KEY_FILE"] = str(ensure_secret(keys / "qr_ticket.key"))
        # The trust boundary's secrets (common/boundary.py): nginx's, and the services' own.
        if not (env.get("EDGE_SECRET") or env.get("EDGE_SECRET_FILE")):
            env["EDGE_SECRET_FILE"] = str(ensure_secret(keys / "edge.secret"))
        if not (env.get("SERVICE_SECRET") or env.get("SERVICE_SECRET_FILE")):
            env["SERVICE_SECRET_FILE"] = str(ensure_secret(keys / "service.secret"))
        internal = self.config.internal_ports
        env.setdefault("AUTH_USERS_SERVICE_URL", f"http://127.0.0.1:{internal['users']}")
        env.setdefault("QR_AUTH_SERVICE_URL", f"http://127.0.0.1:{internal['auth']}")
        env.setdefault("USERS_MEDIA_ROOT", str(self.media_root))
        env.setdefault("USERS_PUBLIC_BASE_URL", self.config.public_base_url)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if "LOG_FORMAT" not in env:
            # Readable lines on a terminal; JSON lines in files and pipes.
            env["LOG_FORMAT"] = "text" if self.foreground and sys.stdout.isatty() else "json"
        return env

    @property
    def edge_secret(self) -> str:
        """What nginx sends every service (X-Edge-Token)."""
        return _secret(self._service_env(), "EDGE_SECRET")

    @property
    def service_secret(self) -> str:
        """What a service sends another's /internal/ routes (X-Service-Token)."""
        return _secret(self._service_env(), "SERVICE_SECRET")

    def _database_role_urls(self) -> None:
        """Each service's role on the private cluster, created (or its password set) now."""
        assert self.postgres is not None
        keys = self.config.data_dir / "keys"
        passwords = {
            item.service: ensure_secret(keys / f"db_{item.service}.password").read_text().strip()
            for item in SERVICE_ROLES
        }
        self.postgres.ensure_service_roles(passwords)
        self.service_database_urls = {
            item.service: self.postgres.url_for(item.role, passwords[item.service]) for item in SERVICE_ROLES
        }

    @property
    def media_root(self) -> Path:
        return self.shared_dir / "media"

    def internal_url(self, name: str) -> str:
        """A service's internal address: nginx balancing over its instances (loopback only)."""
        return f"http://127.0.0.1:{self.config.internal_ports[name]}"

    def instance_url(self, instance: str) -> str:
        return f"http://127.0.0.1:{self.config.ports[instance]}"

    def _workers(self, spec: ServiceDef) -> int:
        return 1 if spec.websocket else self.config.workers

    def _service_command(self, spec: ServiceDef, port: int) -> list[str]:
        # A websocket instance keeps its sessions in its process, and nginx routes to an instance,
        # not a worker: websocket instances always run one worker (scale them with instances).
        workers = self._workers(spec)
        return [
            sys.executable, "-m", "uvicorn", spec.app, "--factory",
            "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--loop", "uvloop",
            # httptools, one write per answer and a stop that does not race nginx (common.serving).
            "--http", "common.serving:HttpProtocol",
            "--workers", str(workers), "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_SECONDS),
            # Websocket frames past this are refused by the protocol layer itself; the QR
            # service's own, smaller limit (QR_MAX_FRAME_BYTES) answers in its protocol.
            "--ws-max-size", "65536",
            *spec.uvicorn_args,
        ]  # fmt: skip

    def _instances(self) -> list[Managed]:
        env = self._service_env()
        items = []
        for spec in self.config.services():
            for instance in self.config.instances_of(spec.name):
                port = self.config.ports[instance]
                instance_env = {**env, "INSTANCE_ID": instance}
                if spec.name in self.service_database_urls:
                    instance_env["DATABASE_URL"] = self.service_database_urls[spec.name]
                if spec.name == "qr_ws":
                    instance_env["QR_INSTANCE_ID"] = instance
                items.append(
                    Managed(
                        instance,
                        command=lambda spec=spec, port=port: self._service_command(spec, port),  # type: ignore[misc]
                        env=instance_env,
                        health=lambda port=port: _http_ok(f"http://127.0.0.1:{port}/healthz"),  # type: ignore[misc]
                        ready=lambda port=port: _http_ok(f"http://127.0.0.1:{port}/readyz"),  # type: ignore[misc]
                        spec=spec,
                    )
                )
        return items

    def instances_of(self, name: str) -> list[str]:
        return self.config.instances_of(name)

    def services(self) -> list[InstanceSpec]:
        """Every instance of every service, with its loopback port."""
        return [
            InstanceSpec(instance, spec.name, spec.app, self.config.ports[instance])
            for spec in self.config.services()
            for instance in self.config.instances_of(spec.name)
        ]

    def _spawn(self, item: Managed) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if item.spec is not None and self._workers(item.spec) > 1:
            # Several workers: prometheus_client adds up their samples from one folder per
            # instance, emptied before each start.
            metrics_dir = self.config.data_dir / "metrics" / item.name
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            item.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        log_path = self.log_dir / f"{item.name}.log"
        stdout: int | IO[bytes]
        stdout = subprocess.PIPE if self.foreground else log_path.open("ab")
        process = subprocess.Popen(
            item.command(),
            env=item.env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        if self.foreground:
            thread = threading.Thread(
                target=self.console.relay, args=(item.name, process.stdout, log_path), daemon=True
            )
            thread.start()
            item.threads = [t for t in item.threads if t.is_alive()] + [thread]
        else:
            assert not isinstance(stdout, int)
            stdout.close()
        item.process = process
        item.started_at = time.monotonic()
        item.restart_at = None

    def migrate(self) -> None:
        try:
            migrate(
                self.database_url or "",
                lambda package, seconds: self.console.step_detail(f"{package} at head ({seconds:.1f} s)"),
                urls={
                    spec.package: self.service_database_urls[spec.name]
                    for spec in self.config.services()
                    if spec.name in self.service_database_urls
                },
            )
        except MigrationError as exc:
            raise StackError(str(exc)) from exc

    def check_ports(self) -> None:
        """Every port the stack will listen on must be free: fail at once, naming the setting."""
        fixed = "to a free port"
        wanted: list[tuple[int, str, str, str]] = [
            (self.config.http_port, self.config.http_host, "", f"HTTP_PORT {fixed}")
        ]
        base = "SERVICES_PORT_BASE to a base with free ports above it"
        for instance, port in self.config.ports.items():
            wanted.append((port, "127.0.0.1", f" ({instance})", base))
        for name, port in self.config.internal_ports.items():
            wanted.append((port, "127.0.0.1", f" ({name}'s internal address)", base))
        wanted.append((self.config.status_port, "127.0.0.1", " (nginx's stub_status)", base))
        if not self.config.redis_url and self.config.redis_port:
            wanted.append((self.config.redis_port, "127.0.0.1", " (Redis)", f"REDIS_PORT {fixed}"))
        if not self.config.database_url and self.config.pg_port:
            wanted.append((self.config.pg_port, "127.0.0.1", " (PostgreSQL)", f"PG_PORT {fixed}"))
        for port, host, what, setting in wanted:
            if not port_is_free(port, host or "0.0.0.0"):
                raise StackError(f"port {port} is taken{what}; set {setting}")

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.data_dir.chmod(0o755)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        try:
            self.check_ports()
            self.shared_dir = shared_dir_for(self.config.data_dir)
            if self.shared_dir != self.config.data_dir:
                self.shared_dir.mkdir(parents=True, exist_ok=True)
                self.shared_dir.chmod(0o755)
                (self.config.data_dir / "shared_dir").write_text(str(self.shared_dir))
            self._write_state()
            self._start_postgres()
            self._start_redis()
            self.console.step("migrations", "applying every service's migrations")
            self.migrate()
            self._start_services(timeout)
            self._start_nginx(timeout)
            self.status = "up"
            self._write_state()
            self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._supervisor.start()
            self._liveness = threading.Thread(target=self._watch_liveness, name="liveness", daemon=True)
            self._liveness.start()
            self._start_control()
        except BaseException:
            self.stop()
            raise

    def _start_postgres(self) -> None:
        if self.database_url:
            self.console.step("PostgreSQL", "using DATABASE_URL")
            return
        self.postgres = PrivatePostgres(
            self.shared_dir / "postgres",
            port=self.config.pg_port,
            for_tests=self.config.pg_for_tests,
        )
        if not self.postgres.initialised:
            self.console.step("PostgreSQL", f"creating a cluster in {self.postgres.root} (first run only)")
            self.postgres.initialise()
        self.console.step("PostgreSQL", f"starting on port {self.postgres.port}")
        self.database_url = self.postgres.start()
        self._database_role_urls()
        self._write_state()

    def _start_redis(self) -> None:
        if self.redis_url:
            self.console.step("Redis", "using REDIS_URL")
            return
        self.redis = PrivateRedis(self.config.data_dir / "redis", port=self.config.redis_port)
        self.redis_url = self.redis.url
        redis = self.redis
        item = Managed(
            "redis", command=redis.command, env=dict(os.environ), health=lambda: redis_ping(redis.port)
        )
        self.console.step("Redis", f"starting on port {redis.port}")
        with self._lock:
            self.managed["redis"] = item
            self._spawn(item)
        self.wait_healthy(["redis"], 30)
        self._write_state()

    def _start_services(self, timeout: float) -> None:
        items = self._instances()
        self.console.step("services", f"starting {len(items)} processes: {', '.join(i.name for i in items)}")
        with self._lock:
            for item in items:
                self.managed[item.name] = item
                self._spawn(item)
        self._write_state()
        # Ready, not only alive: nginx opens its port on instances whose database and Redis answer.
        self.wait_healthy([item.name for item in items], timeout, progress=True, ready=True)

    def _start_nginx(self, timeout: float) -> None:
        # Only now that every instance answers: nginx's port opens on a ready stack.
        nginx = Nginx(self.config, self.media_root, self.shared_dir / "nginx", edge_secret=self.edge_secret)
        port = self.config.http_port
        item = Managed(
            "nginx",
            command=nginx.command,
            env=dict(os.environ),
            health=lambda: _http_ok(f"http://127.0.0.1:{port}/nginx-health"),
        )
        self.console.step("nginx", f"listening on {self.config.http_host}:{port}")
        with self._lock:
            self.managed["nginx"] = item
            self._spawn(item)
        self._write_state()
        self.wait_healthy(["nginx"], timeout)

    def wait_healthy(
        self, names: list[str], timeout: float, *, progress: bool = False, ready: bool = False
    ) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        total = len(pending)
        while pending:
            for name in list(pending):
                with self._lock:
                    item = self.managed[name]
                    process = item.process
                if process is not None and process.poll() is not None and self._supervisor is None:
                    raise StackError(
                        f"{name} exited with code {process.returncode} while starting; its last lines "
                        f"({self.log_dir / (name + '.log')}):\n{self.tail_log(name)}"
                    )
                check = item.ready if ready and item.ready is not None else item.health
                if check():
                    pending.remove(name)
            if progress:
                self.console.progress(f"{total - len(pending)}/{total} answering")
                if not pending:
                    self.console.end_progress()
            if pending and time.monotonic() > deadline:
                raise StackError(
                    f"not healthy after {timeout:.0f} s: {', '.join(pending)}; see {self.log_dir}"
                )
            if pending:
                time.sleep(0.2)

    def tail_log(self, name: str, lines: int = 40) -> str:
        """The last lines of a process's log (of each instance's, for a service name)."""
        if not (self.log_dir / f"{name}.log").exists() and self.config.instances_of(name):
            return "\n".join(
                f"--- {instance}\n{self.tail_log(instance, lines)}"
                for instance in self.config.instances_of(name)
            )
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def service_log(self, name: str) -> str:
        """Everything a service's instances have logged so far (tests look for a request's id)."""
        parts = []
        for instance in self._names(name):
            path = self.log_dir / f"{instance}.log"
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def _write_state(self) -> None:
        with self._lock:
            self._write_state_locked()

    def _write_state_locked(self) -> None:
        pids = {name: item.process.pid for name, item in self.managed.items() if item.process}
        state = {
            "supervisor": os.getpid(),
            "status": self.status,
            "pids": pids,
            "postgres_root": str(self.postgres.root) if self.postgres else None,
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "http_port": self.config.http_port,
            "public_base_url": self.config.public_base_url,
            "control": str(self.control_path) if self._control else None,
        }
        temp = self.state_file.with_suffix(".tmp")
        # The database URL carries the superuser's password: for this user's eyes only.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(state, indent=2))
        temp.replace(self.state_file)

    def stop(self) -> None:
        self._stopping.set()
        if self._control is not None:
            with suppress(OSError):
                self._control.close()
            with suppress(OSError):
                self.control_path.unlink()
            self._control = None
        for thread in (self._supervisor, self._liveness):
            if thread is not None:
                thread.join(timeout=5)
        self._supervisor = self._liveness = None
        with self._lock:
            items = list(self.managed.values())
            for item in items:
                item.wanted = False
        # nginx first (no new requests), then the services, then Redis, then the database.
        order = sorted(items, key=lambda i: {"nginx": 0, "redis": 2}.get(i.name, 1))
        for rank in (0, 1, 2):
            group = [i for i in order if {"nginx": 0, "redis": 2}.get(i.name, 1) == rank]
            for item in group:
                if item.process is not None and item.process.poll() is None:
                    _signal_group(item.process.pid, signal.SIGTERM)
            for item in group:
                _wait_or_kill(item)
        with self._lock:
            self.managed.clear()
        if self.postgres is not None:
            self.postgres.stop()
        for item in items:
            for thread in item.threads:
                thread.join(timeout=2)
        self.state_file.unlink(missing_ok=True)

    def wait(self) -> None:
        """Foreground: block until stop() is called from elsewhere (or a signal interrupts)."""
        while not self._stopping.wait(0.5):
            pass

    # ---- supervisor ----------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                for item in list(self.managed.values()):
                    self._check(item)

    def _watch_liveness(self) -> None:
        """Kills a service instance that stopped answering /healthz (LIVENESS_*): the supervisor
        then restarts it. An instance counts only once it has answered since its start, and not
        while it is stopped on purpose (a rolling restart's drain, a test's stop)."""
        # The stack starts this watch once every instance has answered (wait_healthy).
        with self._lock:
            seen = self._liveness_seen
            seen.clear()
            seen.update(
                (item.name, (item.process.pid, True, 0))
                for item in self.managed.values()
                if item.spec is not None and item.process is not None
            )
        while not self._stopping.wait(LIVENESS_INTERVAL_SECONDS):
            with self._lock:
                running = [
                    (item, item.process)
                    for item in self.managed.values()
                    if item.spec is not None and item.wanted and item.process is not None
                ]
            for item, process in running:
                if process.poll() is not None or self._stopping.is_set():
                    continue
                pid, answered, misses = seen.get(item.name, (process.pid, False, 0))
                if pid != process.pid:
                    answered, misses = False, 0
                if item.health():
                    seen[item.name] = (process.pid, True, 0)
                    continue
                misses = misses + 1 if answered else 0
                seen[item.name] = (process.pid, answered, misses)
                starting_for = time.monotonic() - item.started_at
                stuck_starting = not answered and starting_for > LIVENESS_STARTUP_SECONDS
                if misses >= LIVENESS_MISSES or stuck_starting:
                    with self._lock:
                        if not item.wanted or item.process is not process or process.poll() is not None:
                            continue
                        what = (
                            f"answered no health check within {LIVENESS_STARTUP_SECONDS:g} s of its start"
                            if stuck_starting
                            else f"left {misses} health checks in a row unanswered"
                        )
                        self.console.say(f"{item.name} {what}; killed (restarted as a crash is)")
                        _signal_group(process.pid, signal.SIGKILL)
                    seen.pop(item.name, None)

    def liveness_watches(self, name: str) -> bool:
        """Whether the liveness watch has seen this instance's current process answer, so that it
        now counts its misses (a test stops an instance only then)."""
        with self._lock:
            item = self.managed.get(name)
            pid = item.process.pid if item is not None and item.process is not None else None
            return pid is not None and self._liveness_seen.get(name, (None, False, 0))[:2] == (pid, True)

    def _check(self, item: Managed) -> None:
        if not item.wanted or item.process is None or self._stopping.is_set():
            return
        now = time.monotonic()
        code = item.process.poll()
        if code is None:
            if item.failures and now - item.started_at >= BACKOFF_RESET_SECONDS:
                item.failures = 0
            return
        if item.restart_at is None:
            if now - item.started_at >= BACKOFF_RESET_SECONDS:
                item.failures = 0
            delay = backoff_delay(item.failures)
            item.restart_at = now + delay
            self.console.say(f"{item.name} exited with code {code}; restarting in {delay:g} s")
            return
        if now >= item.restart_at:
            item.failures += 1
            self._spawn(item)
            self._write_state()

    # ---- faults and restarts (tests, `devstack restart`) ---------------------------------------
    def _names(self, name: str) -> list[str]:
        """A service name means all its instances; an instance name (or redis, nginx) itself."""
        if name in self.managed:
            return [name]
        names = [n for n in self.config.instances_of(name) if n in self.managed]
        if not names:
            raise StackError(f"no such service or instance: {name}")
        return names

    def stop_service(self, name: str) -> None:
        """Stop a service's instances (or one instance): they stay down until start_service."""
        for instance in self._names(name):
            self._stop_instance(instance, signal.SIGTERM)

    def kill_instance(self, name: str) -> None:
        """SIGKILL one instance, as a crash would: the supervisor restarts it."""
        with self._lock:
            item = self.managed[name]
            assert item.process is not None
            _signal_group(item.process.pid, signal.SIGKILL)

    def _stop_instance(self, name: str, sig: signal.Signals) -> None:
        with self._lock:
            item = self.managed[name]
            item.wanted = False
            item.restart_at = None
            process = item.process
        if process is not None and process.poll() is None:
            _signal_group(process.pid, sig)
        _wait_or_kill(item)

    def start_service(self, name: str, timeout: float = 60.0) -> None:
        """Start what stop_service stopped; returns once nginx sends requests to it again."""
        names = self._names(name)
        behind_nginx = False
        with self._lock:
            for instance in names:
                item = self.managed[instance]
                if item.process is None or item.process.poll() is not None:
                    self._spawn(item)
                    behind_nginx = behind_nginx or item.spec is not None
                item.wanted = True
                item.failures = 0
        self._write_state()
        self.wait_healthy(names, timeout)
        if behind_nginx:
            # A request that met the stopped instances made nginx leave them out for fail_timeout
            # (when every instance was down, the upstream answers 503 until then).
            time.sleep(NGINX_TAKES_BACK_SECONDS)

    def stop_redis(self) -> None:
        self.stop_service("redis")

    def start_redis(self) -> None:
        self.start_service("redis")

    def stop_postgres(self) -> None:
        """PostgreSQL down (fast shutdown) until start_postgres: the database unreachable."""
        if self.postgres is None:
            raise StackError("PostgreSQL is not private to this stack (DATABASE_URL is set)")
        self.postgres.stop()

    def start_postgres(self) -> None:
        if self.postgres is None:
            raise StackError("PostgreSQL is not private to this stack (DATABASE_URL is set)")
        self.postgres.start()

    def freeze_postgres(self) -> None:
        """PostgreSQL unreachable without refusing anything (SIGSTOP) until thaw_postgres."""
        if self.postgres is None:
            raise StackError("PostgreSQL is not private to this stack (DATABASE_URL is set)")
        self.postgres.freeze()

    def thaw_postgres(self) -> None:
        if self.postgres is None:
            raise StackError("PostgreSQL is not private to this stack (DATABASE_URL is set)")
        self.postgres.thaw()

    def restart_postgres(self) -> None:
        """Fast shutdown (every client connection is cut), then start again on the same port."""
        if self.postgres is None:
            raise StackError("PostgreSQL is not private to this stack (DATABASE_URL is set)")
        self.postgres.restart()

    def rolling_restart(
        self, name: str, say: Callable[[str], None] | None = None, timeout: float = 60.0
    ) -> None:
        """Restart a service's instances one at a time, each healthy again before the next."""
        report = say or self.console.say
        for instance in self._names(name):
            started = time.monotonic()
            report(f"{instance}: stopping (in-flight requests finish first)")
            self._stop_instance(instance, signal.SIGTERM)
            with self._lock:
                item = self.managed[instance]
                self._spawn(item)
                item.wanted = True
                item.failures = 0
            self._write_state()
            self.wait_healthy([instance], timeout)
            report(f"{instance}: answering again after {time.monotonic() - started:.1f} s")
            # nginx left the instance out for fail_timeout after its refused connections; stopping
            # the next one before nginx takes this one back would leave no instance to send to.
            time.sleep(NGINX_TAKES_BACK_SECONDS)

    # ---- control socket (`python -m devstack restart <service>`) -------------------------------
    @property
    def control_path(self) -> Path:
        path = self.config.data_dir / "control.sock"
        if len(str(path)) > 100:  # AF_UNIX path limit
            digest = hashlib.sha256(str(self.config.data_dir).encode()).hexdigest()[:16]
            path = Path("/tmp") / f"chat-devstack-{digest}.sock"  # noqa: S108
        return path

    def _start_control(self) -> None:
        path = self.control_path
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        path.chmod(0o600)
        server.listen(4)
        self._control = server
        self._control_thread = threading.Thread(target=self._serve_control, args=(server,), daemon=True)
        self._control_thread.start()
        self._write_state()

    def _serve_control(self, server: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, conn.makefile("rw", encoding="utf-8") as stream:
                request = json.loads(stream.readline() or "{}")

                def say(line: str) -> None:
                    stream.write(line + "\n")
                    stream.flush()

                try:
                    if request.get("command") == "restart":
                        self.rolling_restart(str(request.get("service")), say)
                        say("ok")
                    else:
                        say(f"error: unknown command {request.get('command')!r}")
                except (StackError, KeyError) as exc:
                    say(f"error: {exc}")
                except OSError:
                    pass


def control_request(data_dir: Path, request: dict[str, str]) -> Iterator[str]:
    """Send one request to a running stack's supervisor; yields its answer's lines."""
    state = read_state(data_dir)
    if state is None or not state.get("control"):
        raise StackError(f"no stack is running from {data_dir} (start one with `make up` or `make run`)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(state["control"]))
        except OSError as exc:
            raise StackError(f"the stack's supervisor does not answer ({exc}); is it running?") from exc
        with sock.makefile("rw", encoding="utf-8") as stream:
            stream.write(json.dumps(request) + "\n")
            stream.flush()
            for line in stream:
                yield line.rstrip("\n")


def read_state(data_dir: Path) -> dict[str, object] | None:
    state_file = data_dir / "stack.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def running_supervisor(data_dir: Path) -> int | None:
    """The pid of the supervisor of a stack running from this folder, if it is alive."""
    state = read_state(data_dir)
    if state is None:
        return None
    pid = state.get("supervisor")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        return pid
    return None


def stop_on_termination() -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, so that the caller's
    `finally: stack.stop()` runs. Without it, `kill` ends the process at once and leaves the
    stack's servers running with nobody to stop them."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_from_state(data_dir: Path, timeout: float = 60.0) -> bool:
    """`make down`: ask the supervisor to stop everything; if it is gone, stop what it left."""
    state = read_state(data_dir)
    if state is None:
        return False
    supervisor = running_supervisor(data_dir)
    if supervisor is not None:
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(supervisor):
            (data_dir / "stack.json").unlink(missing_ok=True)
            return True
    pids = dict(state.get("pids") or {})  # type: ignore[call-overload]
    ordered = [pids.pop("nginx")] if "nginx" in pids else []
    ordered += list(pids.values())
    for pid in ordered:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for pid in ordered:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    if state.get("postgres_root"):
        PrivatePostgres(Path(str(state["postgres_root"]))).stop()
    (data_dir / "stack.json").unlink(missing_ok=True)
    return True


def _secret(env: dict[str, str], name: str) -> str:
    value = env.get(name) or Path(env[f"{name}_FILE"]).read_text()
    return value.strip()


def _wait_or_kill(item: Managed) -> None:
    process = item.process
    if process is None:
        return
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=LIVENESS_TIMEOUT_SECONDS) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        # HTTPException: an answer cut off (an instance killed while it answered).
        return False


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


@contextmanager
def running(config: StackConfig) -> Iterator[Stack]:
    stack = Stack(config)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


__all__ = ["Stack", "StackError", "service", "stop_from_state"]
