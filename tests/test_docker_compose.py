"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked instead:
every service and setting the stack needs is present, only nginx is published, each service's
settings validate in production mode from the compose environment, and the nginx config the
container renders passes `nginx -t`."""

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.config import REPO_ROOT
from devstack.keys import ensure_secret, ensure_signing_keys

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PYTHON_SERVICES = {
    "gateway": "gateway",
    "auth": "auth_service",
    "users": "users_service",
    "private_chat": "private_chat_service",
    "qr_ws": "qr_ws_service",
    "events": "events_service",
}
INTERPOLATION = re.compile(r"\$\{([A-Z_]+)(?::?[-?]([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    return INTERPOLATION.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)


def service_env(name: str, env: dict[str, str]) -> dict[str, str]:
    raw = SERVICES[name].get("environment", {})
    return {key: interpolate(str(value), env) for key, value in raw.items()}


def test_every_part_of_the_stack_is_there() -> None:
    assert {"postgres", "redis", "minio", "minio-init", "keys", "nginx", *PYTHON_SERVICES} <= set(SERVICES)


def test_every_service_runs_in_replicas_with_redis() -> None:
    variables = {
        "gateway": "GATEWAY",
        "auth": "AUTH",
        "users": "USERS",
        "private_chat": "CHAT",
        "qr_ws": "QR",
        "events": "EVENTS",
    }
    for name in PYTHON_SERVICES:
        assert SERVICES[name]["deploy"]["replicas"] == f"${{{variables[name]}_INSTANCES:-2}}"
        assert interpolate(SERVICES[name]["deploy"]["replicas"], {}) == "2"
        assert service_env(name, {"POSTGRES_PASSWORD": "x"})["REDIS_URL"] == "redis://redis:6379/0"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    redis = SERVICES["redis"]
    assert redis["image"] == "redis:7"
    assert "--appendonly" in redis["command"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_only_nginx_publishes_a_port() -> None:
    published = {name for name, spec in SERVICES.items() if spec.get("ports")}
    assert published == {"nginx"}
    assert SERVICES["nginx"]["ports"] == ["${HTTP_PORT:-8080}:8080"]


@pytest.mark.parametrize(("name", "folder"), sorted(PYTHON_SERVICES.items()))
def test_service_images_and_migrations(name: str, folder: str) -> None:
    build = SERVICES[name]["build"]
    assert build["context"] == "."
    dockerfile = (REPO_ROOT / build["dockerfile"]).read_text()
    assert build["dockerfile"] == f"{folder}/Dockerfile"
    assert f"{folder.replace('_', '-')}" in dockerfile  # uv sync --package <name>
    assert "USER nobody" in dockerfile
    has_migrations = (REPO_ROOT / folder / "alembic.ini").exists()
    # Migrations run before the service starts, in the service's own container.
    assert (f"alembic -c {folder}/alembic.ini upgrade head" in dockerfile) == has_migrations


def test_secrets_are_not_in_the_file() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text
    assert "${MINIO_ROOT_PASSWORD:?" in text
    for name in PYTHON_SERVICES:
        assert service_env(name, {})["ENVIRONMENT"] == "production"


def test_dependencies_start_in_order() -> None:
    assert SERVICES["private_chat"]["depends_on"]["users"]["condition"] == "service_healthy"
    assert SERVICES["gateway"]["depends_on"]["auth"]["condition"] == "service_healthy"
    assert SERVICES["auth"]["depends_on"]["keys"]["condition"] == "service_completed_successfully"
    assert set(PYTHON_SERVICES) <= set(SERVICES["nginx"]["depends_on"])


@pytest.fixture(scope="module")
def compose_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    keys = tmp_path_factory.mktemp("keys")
    ensure_signing_keys(keys)
    ensure_secret(keys / "qr_ticket.key")
    return {"POSTGRES_PASSWORD": "pw-from-env", "MINIO_ROOT_PASSWORD": "minio-pw", "KEYS": str(keys)}


def settings_for(name: str, compose_env: dict[str, str]) -> Any:
    env = {
        key: value.replace("/keys/", compose_env["KEYS"] + "/")
        for key, value in service_env(name, compose_env).items()
    }
    folder = PYTHON_SERVICES[name]
    module = __import__(f"{folder}.settings", fromlist=["x"])
    settings_class = next(
        value
        for key, value in vars(module).items()
        if key.endswith("Settings") and getattr(value, "__module__", "") == module.__name__
    )
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return settings_class()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("name", sorted(PYTHON_SERVICES))
def test_settings_validate_in_production_from_compose(name: str, compose_env: dict[str, str]) -> None:
    settings = settings_for(name, compose_env)
    assert settings.is_production
    if hasattr(settings, "database_url"):
        assert settings.database_url == "postgresql://chat:pw-from-env@postgres:5432/chat"


def test_service_urls_point_at_compose_services(compose_env: dict[str, str]) -> None:
    auth = settings_for("auth", compose_env)
    assert auth.users_service_url == "http://users:8000"
    assert auth.private_key_pem().startswith("-----BEGIN PRIVATE KEY-----")
    assert settings_for("gateway", compose_env).public_key_pem().startswith("-----BEGIN PUBLIC KEY-----")
    assert settings_for("qr_ws", compose_env).auth_service_url == "http://auth:8000"
    users = settings_for("users", compose_env)
    assert users.s3_bucket == "avatars"
    assert users.s3_endpoint_url == "http://minio:9000"
    assert users.s3_secret_access_key == "minio-pw"


def test_nginx_container_renders_a_valid_config(tmp_path: Path) -> None:
    script = (REPO_ROOT / "nginx" / "render-config.sh").read_text()
    # The defaults name the compose services that nginx proxies to.
    for upstream in ("gateway:8000", "auth:8000", "users:8000", "private_chat:8000", "qr_ws:8000"):
        assert upstream in script
        assert upstream.split(":")[0] in SERVICES
    # The events location is rendered because compose gives nginx its upstream.
    assert service_env("nginx", {})["EVENTS_UPSTREAMS"] == "events:8000"
    local = (
        script.replace("/etc/nginx/chat-template", str(REPO_ROOT / "nginx"))
        .replace("prefix=/etc/nginx/chat", f"prefix={tmp_path}")
        .replace("/etc/nginx/nginx.conf", str(tmp_path / "nginx.conf"))
        .replace("user nginx;", "")
    )
    (tmp_path / "render.sh").write_text(local)
    # Compose names do not resolve here: point the upstreams at loopback for the syntax check.
    env = {
        **os.environ,
        "GATEWAY_UPSTREAMS": "127.0.0.1:1",
        "AUTH_UPSTREAMS": "127.0.0.1:2",
        "USERS_UPSTREAMS": "127.0.0.1:3",
        "PRIVATE_CHAT_UPSTREAMS": "127.0.0.1:4",
        "QR_WS_UPSTREAMS": "127.0.0.1:5 127.0.0.1:6",
        "MEDIA_UPSTREAM": "http://127.0.0.1:7/avatars/",
    }
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    # Without the events service its location is left out (its upstream does not exist); with it,
    # both are rendered.
    for events in ("", "127.0.0.1:8 127.0.0.1:9"):
        subprocess.run(
            ["sh", str(tmp_path / "render.sh")], check=True, env={**env, "EVENTS_UPSTREAMS": events}
        )
        rendered = (tmp_path / "nginx.conf").read_text()
        assert "{{" not in rendered
        assert "server 127.0.0.1:5 max_fails=1" in rendered
        assert ("upstream events_service" in rendered) == bool(events)
        assert (tmp_path / "locations" / "events.conf").exists() == bool(events)
        result = subprocess.run(
            [nginx, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
