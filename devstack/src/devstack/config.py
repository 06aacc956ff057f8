import importlib.util
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(os.environ.get("CHAT_REPO_ROOT") or Path(__file__).resolve().parents[3])


@dataclass(frozen=True)
class ServiceDef:
    """One service of the stack. Adding a service is one entry in `SERVICES`: devstack then
    starts its instances, migrates it, puts it behind an nginx upstream (and its location file
    `nginx/locations/<name>.conf`, if any) and lists its docs in the banner."""

    name: str  # instances are <name>1, <name>2, ...
    app: str  # uvicorn factory
    instances_var: str  # <NAME>_INSTANCES
    upstream: str  # nginx upstream name
    docs: str | None = None  # API docs under nginx
    migrations: bool = False  # <package>/alembic.ini, applied in table order
    balance: str = ""  # nginx balancing directive, e.g. hash by client id
    websocket: bool = False  # one worker per instance (state lives in the process or per socket)
    optional: bool = False  # started only when its package is importable
    uvicorn_args: tuple[str, ...] = ()  # added to the instances' uvicorn command

    @property
    def package(self) -> str:
        return self.app.split(".", 1)[0]

    def available(self) -> bool:
        if not self.optional:
            return True
        try:
            return importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):
            return False


# In dependency order: migrations run in this order (the chat service reads users' view), and
# `make run` numbers its ports in it.
SERVICES = (
    ServiceDef("users", "users_service.main:create_app", "USERS_INSTANCES", "users_service",
               docs="/users/docs", migrations=True),
    ServiceDef("auth", "auth_service.main:create_app", "AUTH_INSTANCES", "auth_service",
               docs="/auth/docs", migrations=True),
    ServiceDef("private_chat", "private_chat_service.main:create_app", "CHAT_INSTANCES",
               "private_chat_service", docs="/private/docs", migrations=True),
    ServiceDef("gateway", "gateway.main:create_app", "GATEWAY_INSTANCES", "gateway",
               docs="/gateway/docs"),
    # A QR hub's two clients must meet on one instance: nginx routes by client_id.
    ServiceDef("qr_ws", "qr_ws_service.main:create_app", "QR_INSTANCES", "qr_ws_service",
               docs="/auth_events/docs", balance="hash $arg_client_id consistent;", websocket=True),
    ServiceDef("events", "events_service.main:create_app", "EVENTS_INSTANCES", "events_service",
               docs="/events/docs", websocket=True, optional=True,
               # A compressed connection keeps a compressor per socket (see its README).
               uvicorn_args=("--ws-per-message-deflate", "false")),
)  # fmt: skip
DEFAULT_INSTANCES = 2

# Names kept for callers that predate instances (bench): the services always present.
SERVICE_NAMES = tuple(service.name for service in SERVICES if not service.optional)


def service(name: str) -> ServiceDef:
    return next(spec for spec in SERVICES if spec.name == name)


def present_services() -> list[ServiceDef]:
    return [spec for spec in SERVICES if spec.available()]


def instance_names(name: str, count: int) -> list[str]:
    return [f"{name}{index}" for index in range(1, count + 1)]


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a process that will bind it later (tests, bench).

    Chosen below the kernel's ephemeral range: a port the kernel hands out for outgoing
    connections (hundreds of them while a stack starts) could be taken by one before the
    process that was given it binds it. Never the same port twice in one process."""
    low, _ = _ephemeral_range()
    if low > 12000:
        for _ in range(200):
            port = random.randrange(10000, low)  # noqa: S311 (not a secret)
            if port not in _handed_out and port_is_free(port, host):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class StackConfig:
    """Where the stack keeps its state and which ports it uses. `from_env` reads the README's
    variables; tests build one with free ports and a throwaway data folder."""

    data_dir: Path
    http_port: int = 8080
    http_host: str = "127.0.0.1"
    database_url: str | None = None
    pg_port: int | None = None
    pg_for_tests: bool = False
    redis_url: str | None = None
    redis_port: int | None = None
    # Instances per service name (services absent from it run DEFAULT_INSTANCES).
    instances: dict[str, int] = field(default_factory=dict)
    # Loopback port of every instance, by instance name (gateway1, ...).
    ports: dict[str, int] = field(default_factory=dict)
    # Each service's internal address: an nginx listener on loopback that balances its
    # instances, for service-to-service calls (auth -> users, qr_ws -> auth).
    internal_ports: dict[str, int] = field(default_factory=dict)
    # nginx's stub_status (connections and requests, for nginx-prometheus-exporter), loopback only.
    status_port: int = 0
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.assign_ports(free_port)

    @property
    def public_base_url(self) -> str:
        return self.env.get("PUBLIC_BASE_URL") or f"http://{self.http_host}:{self.http_port}"

    def services(self) -> list[ServiceDef]:
        return present_services()

    def instance_count(self, name: str) -> int:
        return self.instances.get(name, DEFAULT_INSTANCES)

    def instances_of(self, name: str) -> list[str]:
        return instance_names(name, self.instance_count(name))

    def assign_ports(self, allocate: Callable[[], int]) -> None:
        """Ports for every instance and internal address not given yet."""
        for spec in self.services():
            for instance in self.instances_of(spec.name):
                if instance not in self.ports:
                    self.ports[instance] = allocate()
            if spec.name not in self.internal_ports:
                self.internal_ports[spec.name] = allocate()
        if not self.status_port:
            self.status_port = allocate()

    # Older names, for callers written when each service had one process.
    @property
    def service_ports(self) -> dict[str, int]:
        """Each service's internal address (balanced over its instances)."""
        return dict(self.internal_ports)

    @property
    def qr_ports(self) -> list[int]:
        return [self.ports[name] for name in self.instances_of("qr_ws")]

    @classmethod
    def from_env(cls) -> "StackConfig":
        environ = os.environ
        base = int(environ.get("SERVICES_PORT_BASE", "8100"))
        instances = {spec.name: int(environ.get(spec.instances_var, DEFAULT_INSTANCES)) for spec in SERVICES}
        counter = iter(range(base + 1, 65536))
        config = cls(
            data_dir=Path(environ.get("DATA_DIR") or REPO_ROOT / ".data").resolve(),
            http_port=int(environ.get("HTTP_PORT", "8080")),
            http_host=environ.get("HTTP_HOST", "127.0.0.1"),
            database_url=environ.get("DATABASE_URL") or None,
            pg_port=int(environ["PG_PORT"]) if environ.get("PG_PORT") else None,
            redis_url=environ.get("REDIS_URL") or None,
            redis_port=int(environ["REDIS_PORT"]) if environ.get("REDIS_PORT") else None,
            instances=instances,
            ports={},
            internal_ports={},
            workers=int(environ.get("SERVICE_WORKERS", "1")),
            env={key: value for key, value in environ.items() if key == "PUBLIC_BASE_URL"},
        )
        # __post_init__ gave free ports; make run numbers them from SERVICES_PORT_BASE instead.
        config.ports.clear()
        config.internal_ports.clear()
        config.status_port = 0
        config.assign_ports(lambda: next(counter))
        return config

    @classmethod
    def for_tests(
        cls,
        data_dir: Path,
        *,
        instances: int = 2,
        qr_instances: int | None = None,
        env: dict[str, str] | None = None,
    ) -> "StackConfig":
        counts = {spec.name: instances for spec in SERVICES}
        if qr_instances is not None:
            counts["qr_ws"] = qr_instances
        return cls(
            data_dir=data_dir,
            http_port=free_port(),
            database_url=os.environ.get("TEST_DATABASE_URL") or None,
            pg_port=free_port(),
            pg_for_tests=True,
            redis_url=os.environ.get("TEST_REDIS_URL") or None,
            redis_port=free_port(),
            instances=counts,
            env=dict(env or {}),
        )
