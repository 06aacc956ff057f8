"""A private PostgreSQL cluster (used when DATABASE_URL is not given)."""

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import asyncpg

from devstack.config import free_port, port_is_free
from devstack.errors import StackError
from devstack.system import find_postgres_bindir, is_root

DATABASE_NAME = "chat"


class PrivatePostgres:
    def __init__(
        self, root: Path, *, port: int | None = None, for_tests: bool = False, port_fixed: bool = False
    ) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "run"
        self.log_file = root / "postgres.log"
        self.port_file = root / "port"
        self.for_tests = for_tests
        remembered = int(self.port_file.read_text()) if self.port_file.exists() else None
        self.port = port or remembered or free_port()
        if not port and not port_fixed and not self.running() and not port_is_free(self.port):
            # The remembered port was taken by something else meanwhile: any free one will do.
            self.port = free_port()
        self.bindir = find_postgres_bindir()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE_NAME}"

    @property
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _run(self, *args: str, what: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if is_root():
            # PostgreSQL refuses to run as root; the cluster belongs to the postgres system user.
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            log = ""
            if self.log_file.exists():
                log = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise StackError(
                f"PostgreSQL: {what} failed (`{' '.join(command)}`, exit {result.returncode}):\n"
                + (output or "(no output)")
                + (f"\nlast lines of {self.log_file}:\n{log}" if log else "")
                + f"\nWhat to do: fix the cause above, or remove {self.root} to start a fresh cluster,"
                " or set DATABASE_URL to use an existing PostgreSQL."
            )
        return result

    def _prepare_dirs(self) -> None:
        for path in (self.root, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        if is_root():
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir, *([self.data] if self.data.exists() else [])):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            if self.log_file.exists():
                os.chown(self.log_file, owner.pw_uid, owner.pw_gid)

    def initialise(self) -> None:
        self._prepare_dirs()
        if self.data.exists():
            shutil.rmtree(self.data)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-locale", "--no-instructions",
            what="creating the cluster (initdb)",
        )  # fmt: skip

    def start(self) -> str:
        self._prepare_dirs()
        if not self.initialised:
            self.initialise()
        self._start_server()
        self.port_file.write_text(str(self.port))
        asyncio.run(self._ensure_database())
        return self.url

    def _start_server(self) -> None:
        options = [
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=400",
        ]
        if self.for_tests:
            # Throwaway data: trade durability for speed.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
            "-o", " ".join(options), "start",
            what=f"starting the server on port {self.port}",
        )  # fmt: skip

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            await conn.close()

    def restart(self) -> None:
        """Fast shutdown (clients are disconnected), then start again on the same port."""
        self.stop()
        self._start_server()

    def stop(self) -> None:
        if self.running():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", what="stopping")
            except StackError:
                pass

    def server_pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return []
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == postmaster:
                children.append(int(entry.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """Every server process stopped (SIGSTOP): connections stay open and new ones are queued by
        the kernel, but nothing answers, as when the network to the database drops packets."""
        for pid in self.server_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.server_pids():
            os.kill(pid, signal.SIGCONT)
