"""A private PostgreSQL cluster (used when DATABASE_URL is not given).

Every connection needs a password (scram-sha-256), over TCP and over the local socket alike: an
OS user on the machine gets nothing without one. The superuser's password is generated into the
cluster's folder on first start (readable by the user running devstack only); the services get
their own roles (devstack.roles)."""

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import asyncpg

from devstack.config import free_port, port_is_free
from devstack.errors import StackError
from devstack.keys import ensure_secret
from devstack.roles import ensure_roles
from devstack.system import find_postgres_bindir, is_root

DATABASE_NAME = "chat"
SUPERUSER = "postgres"
# Written last by the first start that secured the cluster (a cluster made by an older devstack
# trusted every local connection: its first start here sets the password, then requires it).
SECURED_MARKER = "scram"
HBA = """# Written by devstack: a password (scram-sha-256) for every connection, the local socket too.
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
"""


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
        self.password_file = root / "superuser.password"

    @property
    def password(self) -> str:
        return ensure_secret(self.password_file).read_text().strip()

    @property
    def url(self) -> str:
        """The superuser's URL (migrations of tests' own databases, checks, the role set-up)."""
        return self.url_for(SUPERUSER, self.password)

    def url_for(self, role: str, password: str) -> str:
        # Passwords are url-safe base64 (devstack.keys.ensure_secret): nothing to escape.
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{DATABASE_NAME}"

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
        (self.root / SECURED_MARKER).unlink(missing_ok=True)
        # initdb reads the password from a file its user (postgres, under root) can read; it is
        # removed as soon as initdb is done.
        pwfile = self.root / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(self.password + "\n")
        if is_root():
            owner = pwd.getpwnam("postgres")
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "scram-sha-256",
                f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-instructions",
                what="creating the cluster (initdb)",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        self._write_hba()
        (self.root / SECURED_MARKER).write_text("scram-sha-256\n")

    def _write_hba(self) -> None:
        hba = self.data / "pg_hba.conf"
        hba.write_text(HBA)
        if is_root():
            owner = pwd.getpwnam("postgres")
            os.chown(hba, owner.pw_uid, owner.pw_gid)
        hba.chmod(0o600)

    def start(self) -> str:
        self._prepare_dirs()
        if not self.initialised:
            self.initialise()
        self._start_server()
        self.port_file.write_text(str(self.port))
        if not (self.root / SECURED_MARKER).exists():
            asyncio.run(self._secure_older_cluster())
        asyncio.run(self._ensure_database())
        return self.url

    async def _secure_older_cluster(self) -> None:
        """A cluster an older devstack made with `trust`: give the superuser its password, then
        require passwords from now on."""
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password, database="postgres"
        )
        try:
            literal = "'" + self.password.replace("'", "''") + "'"
            await conn.execute(f"ALTER ROLE {SUPERUSER} PASSWORD {literal}")
            self._write_hba()
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        (self.root / SECURED_MARKER).write_text("scram-sha-256\n")

    def ensure_service_roles(self, passwords: dict[str, str]) -> None:
        """Each service's own role (devstack.roles), with these passwords."""

        async def run() -> None:
            conn = await asyncpg.connect(self.url)
            try:
                await ensure_roles(conn, DATABASE_NAME, passwords)
            finally:
                await conn.close()

        asyncio.run(run())

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
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password, database="postgres"
        )
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
        the kernel, but nothing answers, as when the network to the database drops packets. The
        postmaster first, so that no backend is forked after the list of its children is read
        (such a backend went on serving the connection it was started for)."""
        pids = self.server_pids()
        if not pids:
            raise RuntimeError(f"no PostgreSQL server process found for {self.data}")
        os.kill(pids[0], signal.SIGSTOP)
        stopped = {pids[0]}
        for _ in range(3):  # children forked while the postmaster was being stopped
            for pid in self.server_pids():
                if pid not in stopped:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)

    def thaw(self) -> None:
        for pid in self.server_pids():
            os.kill(pid, signal.SIGCONT)
