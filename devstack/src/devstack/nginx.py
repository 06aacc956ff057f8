"""Renders the project's nginx config for this stack and runs nginx in the foreground."""

import grp
import os
import pwd
import re
import shutil
from pathlib import Path

from devstack.config import REPO_ROOT, ServiceDef, StackConfig
from devstack.system import find_nginx, is_root

NGINX_DIR = REPO_ROOT / "nginx"
# Static pages (the QR login pages) served by nginx itself.
WEB_DIR = REPO_ROOT / "web"
TEMPLATE = NGINX_DIR / "nginx.conf.template"
INCLUDES = ("proxy_public.conf", "proxy_protected.conf", "security_headers.conf")
# Locations only `make bench` needs (BENCH_LOCATIONS=1); never rendered otherwise.
BENCH_INCLUDE = "bench_locations.conf"
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")

DEFAULTS_FILE = NGINX_DIR / "defaults.env"


def read_defaults(path: Path = DEFAULTS_FILE) -> dict[str, str]:
    """The settings an operator can override through the environment, with their defaults
    (nginx/defaults.env, which the compose image's render-config.sh reads too)."""
    defaults = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            defaults[key] = value
    return defaults


NGINX_DEFAULTS = read_defaults()


def render(template: str, values: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"nginx template needs {name}")
        return values[name]

    return PLACEHOLDER.sub(substitute, template)


# Passive health checks: one failed attempt (refused, timed out, 502/503) takes an instance out
# for this long; then one request tries it again (and goes on to the next instance if it fails).
FAIL_TIMEOUT_SECONDS = 2
# How long after an instance answers again until every nginx worker sends to it: fail_timeout is
# compared with nginx's cached clock, which counts whole seconds, so a failure at 12.9 keeps the
# instance out until 15.0, not 14.9 (a rolling restart that waited fail_timeout + 0.5 s stopped the
# next instance while a worker still had none to send to: "no live upstreams", 503).
NGINX_TAKES_BACK_SECONDS = FAIL_TIMEOUT_SECONDS + 1.5
FAIL_TIMEOUT = f"{FAIL_TIMEOUT_SECONDS}s"
# Below uvicorn's 5 s keep-alive: nginx closes an idle upstream connection before the service
# does, so it never sends a request down a connection that is being closed.
UPSTREAM_KEEPALIVE_TIMEOUT = "4s"


def passive_check(spec: ServiceDef) -> str:
    """A hashed upstream (the QR hubs: both clients of a hub must reach the one instance that holds
    it) never takes an instance out after a failure: for fail_timeout, every new connection whose
    key hashes to it would go to another instance, and a hub whose browser came before the
    failure and whose phone came after was split in two (seen in the tests: one client on each
    instance, "mobile connected" never sent). A connection that fails still tries the next
    instance, and both clients of a new hub then fail over to the same one."""
    return "max_fails=0" if spec.balance else f"max_fails=1 fail_timeout={FAIL_TIMEOUT}"


def upstream_block(spec: ServiceDef, ports: list[int]) -> str:
    lines = [f"    upstream {spec.upstream} {{"]
    if spec.balance:
        lines.append(f"        {spec.balance}")
    lines += [f"        server 127.0.0.1:{port} {passive_check(spec)};" for port in ports]
    if not spec.websocket:
        lines += ["        keepalive 64;", f"        keepalive_timeout {UPSTREAM_KEEPALIVE_TIMEOUT};"]
    lines.append("    }")
    return "\n".join(lines)


def internal_server(spec: ServiceDef, port: int) -> str:
    # When no instance could be reached (every connection refused or timed out before it was
    # made), the request certainly changed nothing: the answer says so (503 and
    # X-Upstream-Unreached: 1), so a caller can undo its own step at once. Any other failure
    # may have reached an instance: a plain 502.
    return "\n".join(
        [
            "    server {",
            f"        listen 127.0.0.1:{port};",
            "        access_log off;",
            "        location / {",
            "            proxy_set_header Host $http_host;",
            '            proxy_set_header Connection "";',
            f"            proxy_pass http://{spec.upstream};",
            "            error_page 502 504 = @unreached;",
            "        }",
            "        location @unreached {",
            "            default_type application/json;",
            "            if ($upstream_unreached) {",
            "                add_header X-Upstream-Unreached 1 always;",
            f'                return 503 \'{{"detail":"no instance of {spec.name} is reachable"}}\';',
            "            }",
            f'            return 502 \'{{"detail":"{spec.name} failed"}}\';',
            "        }",
            "    }",
        ]
    )


class Nginx:
    def __init__(
        self, config: StackConfig, media_root: Path, shared_root: Path | None = None, *, edge_secret: str
    ) -> None:
        self.config = config
        self.edge_secret = edge_secret
        self.prefix = config.data_dir / "nginx"
        self.media_root = media_root
        # What the workers (nobody, as root) read or write: somewhere that user can reach.
        shared = shared_root or self.prefix
        self.temp_root = shared / "tmp"
        self.web_root = shared / "web"
        self.binary = find_nginx()

    def prepare(self) -> Path:
        temp_dirs = [self.temp_root / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]
        for path in (self.prefix / "logs", *temp_dirs):
            path.mkdir(parents=True, exist_ok=True)
        self.media_root.mkdir(parents=True, exist_ok=True)
        self.media_root.chmod(0o755)
        user_directive = ""
        if is_root():
            # Workers run as nobody: they must own the temp dirs and read the media folder.
            nobody = pwd.getpwnam("nobody")
            group = "nogroup" if _group_exists("nogroup") else "nobody"
            for path in (self.temp_root, *temp_dirs):
                os.chown(path, nobody.pw_uid, grp.getgrnam(group).gr_gid)
            user_directive = f"user nobody {group};"
        settings = {key: os.environ.get(key) or default for key, default in NGINX_DEFAULTS.items()}
        services = self.config.services()
        upstreams = [
            upstream_block(spec, [self.config.ports[name] for name in self.config.instances_of(spec.name)])
            for spec in services
        ]
        internal = [internal_server(spec, self.config.internal_ports[spec.name]) for spec in services]
        values = {
            **settings,
            "USER_DIRECTIVE": user_directive,
            "PREFIX": str(self.prefix),
            "TEMP": str(self.temp_root),
            "MEDIA_SOURCE": f"alias {self.media_root}/; autoindex off; try_files $uri =404;",
            "ERROR_LOG": str(self.prefix / "logs" / "error.log"),
            "ACCESS_LOG": str(self.prefix / "logs" / "access.log"),
            "HTTP_HOST": self.config.http_host,
            "HTTP_PORT": str(self.config.http_port),
            "UPSTREAMS": "\n".join(upstreams),
            "INTERNAL_SERVERS": "\n".join(internal),
            "STATUS_LISTEN": f"127.0.0.1:{self.config.status_port}",
            "EDGE_SECRET": self.edge_secret,
        }
        for include in INCLUDES:
            (self.prefix / include).write_text((NGINX_DIR / include).read_text())
        bench_locations = self.prefix / BENCH_INCLUDE
        if os.environ.get("BENCH_LOCATIONS") == "1":
            bench_locations.write_text((NGINX_DIR / BENCH_INCLUDE).read_text())
        else:
            bench_locations.unlink(missing_ok=True)
        # A copy in a folder nginx's workers (nobody, as root) can read, wherever the repository
        # lives.
        web_root = self.web_root
        shutil.rmtree(web_root, ignore_errors=True)
        shutil.copytree(WEB_DIR, web_root)
        for path in (web_root, *web_root.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        values["WEB_ROOT"] = str(web_root)
        # Locations of optional services, only when the service (and so its upstream) is present.
        locations = self.prefix / "locations"
        if locations.exists():
            shutil.rmtree(locations)
        locations.mkdir()
        for spec in services:
            source = NGINX_DIR / "locations" / f"{spec.name}.conf"
            if source.exists():
                (locations / source.name).write_text(render(source.read_text(), values))
        config_path = self.prefix / "nginx.conf"
        # It holds the edge secret: readable by nginx's master (this user) only.
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(render(TEMPLATE.read_text(), values))
        config_path.chmod(0o600)
        return config_path

    def command(self) -> list[str]:
        config_path = self.prepare()
        return [
            str(self.binary),
            "-e",
            "stderr",
            "-p",
            str(self.prefix),
            "-c",
            str(config_path),
            "-g",
            "daemon off;",
        ]


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
