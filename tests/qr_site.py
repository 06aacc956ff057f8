"""A websocket instance with settings of its own (a short hub lifetime, an unreachable auth
service), and optionally a second nginx of the project's own config in front of it that shares
every other service of the session's stack. Tests that need such settings use these instead of
changing the stack every other test relies on (tests/ is on sys.path under pytest)."""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from devstack import Stack
from devstack.config import REPO_ROOT, free_port
from devstack.nginx import Nginx


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in 30 s:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class QrInstance:
    """One websocket instance on a free loopback port; `stop()` ends it early."""

    def __init__(self, stack: Stack, folder: Path, settings: dict[str, str]) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "QR_AUTH_SERVICE_URL": f"http://127.0.0.1:{stack.config.service_ports['auth']}",
            "QR_INSTANCE_ID": "qr-test",
            # The stack's trust boundary: nginx's secret, and the one for auth's internal routes.
            "EDGE_SECRET": stack.edge_secret,
            "SERVICE_SECRET": stack.service_secret,
            **settings,
        }
        self.log = folder / f"qr_{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "qr_ws_service.main:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
            )  # fmt: skip
        _wait_healthy(self.process, f"http://127.0.0.1:{self.port}/healthz", self.log)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.process)


@contextmanager
def qr_instance(stack: Stack, **settings: str) -> Iterator[QrInstance]:
    folder = Path(tempfile.mkdtemp(prefix="chat-qr-"))
    instance = QrInstance(stack, folder, settings)
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclasses.dataclass
class QrSite:
    base_url: str
    instance: QrInstance


@contextmanager
def qr_site(stack: Stack, **settings: str) -> Iterator[QrSite]:
    """nginx with the project's config on a free port: the QR hubs go to one instance started
    with `settings`, everything else to the session's stack."""
    folder = Path(tempfile.mkdtemp(prefix="chat-qr-site-"))
    folder.chmod(0o755)  # nginx's workers (nobody, as root) read the pages copied in here
    instance = QrInstance(stack, folder, settings)
    # One websocket instance (this one); every other upstream is the session stack's instances.
    # Fresh internal addresses: the session's nginx listens on its own.
    config = dataclasses.replace(
        stack.config,
        data_dir=folder,
        http_port=free_port(),
        instances={**stack.config.instances, "qr_ws": 1},
        ports={**stack.config.ports, "qr_ws1": instance.port},
        internal_ports={},
        status_port=0,  # a fresh one too: the session's nginx holds its stub_status port
    )
    log = folder / "nginx.log"
    try:
        with log.open("wb") as out:
            nginx = subprocess.Popen(
                Nginx(config, stack.config.data_dir / "media", edge_secret=stack.edge_secret).command(),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            base_url = f"http://127.0.0.1:{config.http_port}"
            _wait_healthy(nginx, f"{base_url}/nginx-health", log)
            yield QrSite(base_url, instance)
        finally:
            _stop(nginx)
    finally:
        instance.stop()
        shutil.rmtree(folder, ignore_errors=True)
