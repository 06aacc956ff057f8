"""Finding (and, as root, installing) the system programs the stack needs."""

import os
import shutil
import subprocess
from pathlib import Path


class MissingProgram(RuntimeError):
    pass


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(*packages: str) -> None:
    """Install Debian packages when running as root; otherwise say exactly what to run."""
    command = "apt-get install -y " + " ".join(packages)
    if not is_root() or shutil.which("apt-get") is None:
        raise MissingProgram(f"missing system packages; run: sudo apt-get update && sudo {command}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def find_nginx() -> Path:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        apt_install("nginx-light")
        found = shutil.which("nginx") or "/usr/sbin/nginx"
    return Path(found)


def _pg_version(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.parent.parent.name.split("."))
    except ValueError:
        return (0,)


def find_postgres_bindir() -> Path:
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_pg_version, reverse=True)
    if not candidates:
        on_path = shutil.which("initdb")
        if on_path and Path(on_path).resolve().parent.joinpath("postgres").exists():
            return Path(on_path).resolve().parent
        apt_install("postgresql")
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_pg_version, reverse=True)
        if not candidates:
            raise MissingProgram("PostgreSQL binaries not found after installing postgresql")
    return candidates[0].parent


def find_redis_server() -> Path:
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()), None
    )
    if found is None:
        apt_install("redis-server")
        found = shutil.which("redis-server") or "/usr/bin/redis-server"
    return Path(found)


def user_can_enter(user: str, path: Path) -> bool:
    """Whether a system user can reach `path` (every folder above it searchable). Only asked as root,
    for the users the stack's helpers run as (postgres, nginx's nobody)."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-x", str(path)], capture_output=True, check=False
    )
    return result.returncode == 0
