"""Renders the project's nginx config for this stack and runs nginx in the foreground."""

import grp
import os
import pwd
import re
import shutil
from pathlib import Path

from devstack.config import REPO_ROOT, StackConfig
from devstack.system import find_nginx, is_root

NGINX_DIR = REPO_ROOT / "nginx"
# Static pages (the QR login pages) served by nginx itself.
WEB_DIR = REPO_ROOT / "web"
TEMPLATE = NGINX_DIR / "nginx.conf.template"
INCLUDES = ("proxy_public.conf", "proxy_protected.conf")
# Locations only `make bench` needs (BENCH_LOCATIONS=1); never rendered otherwise.
BENCH_INCLUDE = "bench_locations.conf"
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")

# Defaults an operator can override through the environment (see README).
NGINX_DEFAULTS = {
    "NGINX_WORKER_PROCESSES": "auto",
    "LOGIN_RATE_LIMIT": "10r/s",
    "LOGIN_RATE_BURST": "30",
    "REGISTER_RATE_LIMIT": "5r/s",
    "REGISTER_RATE_BURST": "30",
    "AVATAR_MAX_BODY": "9m",
    "NGINX_ACCESS_LOG": "1",
    # How long nginx keeps the gateway's "token good" answer (0: not at all); bounds how late a
    # logout takes effect.
    "NGINX_AUTH_CACHE_SECONDS": "0",
}


def render(template: str, values: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"nginx template needs {name}")
        return values[name]

    return PLACEHOLDER.sub(substitute, template)


def upstream_servers(ports: list[int]) -> str:
    return "\n".join(f"        server 127.0.0.1:{port} max_fails=0;" for port in ports)


class Nginx:
    def __init__(self, config: StackConfig, media_root: Path) -> None:
        self.config = config
        self.prefix = config.data_dir / "nginx"
        self.media_root = media_root
        self.binary = find_nginx()

    def prepare(self) -> Path:
        temp_dirs = [
            self.prefix / "tmp" / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ]
        for path in (self.prefix / "logs", *temp_dirs):
            path.mkdir(parents=True, exist_ok=True)
        self.media_root.mkdir(parents=True, exist_ok=True)
        self.media_root.chmod(0o755)
        user_directive = ""
        if is_root():
            # Workers run as nobody: they must own the temp dirs and read the media folder.
            nobody = pwd.getpwnam("nobody")
            group = "nogroup" if _group_exists("nogroup") else "nobody"
            for path in (self.prefix / "tmp", *temp_dirs):
                os.chown(path, nobody.pw_uid, grp.getgrnam(group).gr_gid)
            user_directive = f"user nobody {group};"
        settings = {key: os.environ.get(key, default) for key, default in NGINX_DEFAULTS.items()}
        ports = self.config.service_ports
        values = {
            **settings,
            "USER_DIRECTIVE": user_directive,
            "PREFIX": str(self.prefix),
            "MEDIA_SOURCE": f"alias {self.media_root}/; autoindex off; try_files $uri =404;",
            "ERROR_LOG": str(self.prefix / "logs" / "error.log"),
            "ACCESS_LOG": str(self.prefix / "logs" / "access.log"),
            "HTTP_HOST": self.config.http_host,
            "HTTP_PORT": str(self.config.http_port),
            "GATEWAY_SERVERS": upstream_servers([ports["gateway"]]),
            "AUTH_SERVERS": upstream_servers([ports["auth"]]),
            "USERS_SERVERS": upstream_servers([ports["users"]]),
            "PRIVATE_CHAT_SERVERS": upstream_servers([ports["private_chat"]]),
            "QR_WS_SERVERS": upstream_servers(self.config.qr_ports),
        }
        for include in INCLUDES:
            (self.prefix / include).write_text((NGINX_DIR / include).read_text())
        bench_locations = self.prefix / BENCH_INCLUDE
        if os.environ.get("BENCH_LOCATIONS") == "1":
            bench_locations.write_text((NGINX_DIR / BENCH_INCLUDE).read_text())
        else:
            bench_locations.unlink(missing_ok=True)
        # A copy inside the prefix, so nginx's workers (nobody, as root) can read it wherever the
        # repository lives.
        web_root = self.prefix / "web"
        shutil.rmtree(web_root, ignore_errors=True)
        shutil.copytree(WEB_DIR, web_root)
        for path in (web_root, *web_root.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        values["WEB_ROOT"] = str(web_root)
        config_path = self.prefix / "nginx.conf"
        config_path.write_text(render(TEMPLATE.read_text(), values))
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
