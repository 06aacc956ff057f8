import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(os.environ.get("CHAT_REPO_ROOT") or Path(__file__).resolve().parents[3])

SERVICE_NAMES = ("gateway", "auth", "users", "private_chat")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
    service_ports: dict[str, int] = field(default_factory=dict)
    qr_ports: list[int] = field(default_factory=list)
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)

    @property
    def public_base_url(self) -> str:
        return self.env.get("PUBLIC_BASE_URL") or f"http://{self.http_host}:{self.http_port}"

    @classmethod
    def from_env(cls) -> "StackConfig":
        base = int(os.environ.get("SERVICES_PORT_BASE", "8100"))
        qr_instances = int(os.environ.get("QR_INSTANCES", "2"))
        return cls(
            data_dir=Path(os.environ.get("DATA_DIR") or REPO_ROOT / ".data").resolve(),
            http_port=int(os.environ.get("HTTP_PORT", "8080")),
            http_host=os.environ.get("HTTP_HOST", "127.0.0.1"),
            database_url=os.environ.get("DATABASE_URL") or None,
            pg_port=int(os.environ["PG_PORT"]) if os.environ.get("PG_PORT") else None,
            service_ports={name: base + 1 + index for index, name in enumerate(SERVICE_NAMES)},
            qr_ports=[base + 1 + len(SERVICE_NAMES) + i for i in range(qr_instances)],
            workers=int(os.environ.get("SERVICE_WORKERS", "1")),
            env={key: value for key, value in os.environ.items() if key == "PUBLIC_BASE_URL"},
        )

    @classmethod
    def for_tests(
        cls, data_dir: Path, *, qr_instances: int = 2, env: dict[str, str] | None = None
    ) -> "StackConfig":
        return cls(
            data_dir=data_dir,
            http_port=free_port(),
            database_url=os.environ.get("TEST_DATABASE_URL") or None,
            pg_port=free_port(),
            pg_for_tests=True,
            service_ports={name: free_port() for name in SERVICE_NAMES},
            qr_ports=[free_port() for _ in range(qr_instances)],
            env=dict(env or {}),
        )
