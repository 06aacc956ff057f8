"""A private Redis server in the data folder (used when REDIS_URL is not given)."""

import socket
from pathlib import Path

from devstack.config import free_port, port_is_free
from devstack.system import find_redis_server


class PrivateRedis:
    def __init__(self, root: Path, *, port: int | None = None) -> None:
        self.root = root
        self.config_file = root / "redis.conf"
        self.port_file = root / "port"
        remembered = int(self.port_file.read_text()) if self.port_file.exists() else None
        self.port = port or remembered or free_port()
        if not port and not port_is_free(self.port):
            self.port = free_port()
        self.binary = find_redis_server()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The server in the foreground, for the supervisor (config written into its folder)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            "\n".join(
                [
                    "# Written by devstack on every start; settings: README (REDIS_URL, REDIS_PORT).",
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    f"dir {self.root}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    'logfile ""',
                    "loglevel notice",
                    "databases 16",
                ]
            )
            + "\n"
        )
        self.port_file.write_text(str(self.port))
        return [str(self.binary), str(self.config_file)]


def redis_ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING (and has loaded its data: no LOADING error)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
