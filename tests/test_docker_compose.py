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
# Compose interpolation: $$ (a literal $), $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?message}, ${VAR?message}, ${VAR:+other}, ${VAR+other}.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class MissingVariable(Exception):
    """What `docker compose` stops with when a `${VAR:?message}` variable is not set."""


def interpolate(value: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("bare") or match.group("name")
        op, arg = match.group("op"), match.group("arg") or ""
        is_set = name in env
        is_filled = bool(env.get(name))
        present = is_filled if op and op.startswith(":") else is_set
        if op in (":?", "?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":+", "+"):
            return arg if present else ""
        return env.get(name, "")

    return INTERPOLATION.sub(substitute, value)


def strings(node: object) -> list[str]:
    """Every string value of the parsed file (anchors and merges already resolved)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings(value)]
    return []


def interpolate_file(env: dict[str, str]) -> None:
    for text in strings(COMPOSE):
        interpolate(text, env)


def required_variables() -> set[str]:
    return {
        match.group("name")
        for text in strings(COMPOSE)
        for match in INTERPOLATION.finditer(text)
        if match.group("op") in (":?", "?")
    }


def service_env(name: str, env: dict[str, str]) -> dict[str, str]:
    raw = SERVICES[name].get("environment", {})
    return {key: interpolate(str(value), env) for key, value in raw.items()}


def test_every_part_of_the_stack_is_there() -> None:
    assert {"postgres", "redis", "minio", "minio-init", "keys", "nginx", *PYTHON_SERVICES} <= set(SERVICES)
    assert {"prometheus", "grafana", "nginx-exporter"} <= set(SERVICES)


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
        assert service_env(name, REQUIRED_ENV)["REDIS_URL"] == "redis://redis:6379/0"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    redis = SERVICES["redis"]
    assert redis["image"] == "redis:7"
    assert "--appendonly" in redis["command"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_only_nginx_publishes_a_port() -> None:
    published = {name for name, spec in SERVICES.items() if spec.get("ports")}
    assert published == {"nginx"}
    assert SERVICES["nginx"]["ports"] == ["${HTTP_PORT:-8080}:8080"]


DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
SERVE = (REPO_ROOT / "scripts" / "serve.sh").read_text()


@pytest.mark.parametrize(("name", "folder"), sorted(PYTHON_SERVICES.items()))
def test_every_service_builds_from_the_one_dockerfile(name: str, folder: str) -> None:
    build = SERVICES[name]["build"]
    assert build == {"context": ".", "args": {"SERVICE": folder}}
    package = folder.replace("_", "-")
    assert (REPO_ROOT / folder / "pyproject.toml").read_text().count(f'name = "{package}"') == 1
    # Every image runs as a non-root user on a read-only root filesystem.
    assert SERVICES[name]["read_only"] is True
    assert SERVICES[name]["tmpfs"] == ["/tmp"]
    assert not (REPO_ROOT / folder / "Dockerfile").exists()


def test_the_dockerfile_is_multi_stage_and_non_root() -> None:
    stages = re.findall(r"^FROM \S+ AS (\w+)$", DOCKERFILE, re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    assert "USER nobody" in runtime
    assert "uv" not in runtime.replace("uvicorn", "")  # no build tool in the image that runs
    # The workspace package the build stage installs is the folder's name with dashes.
    assert 'uv sync --frozen --no-dev --no-editable --package "$(echo "$SERVICE" | tr _ -)"' in DOCKERFILE
    assert 'CMD ["/app/scripts/serve.sh"]' in DOCKERFILE
    # Migrations run before the service starts, in the service's own container.
    assert 'alembic -c "/app/$SERVICE/alembic.ini" upgrade head' in SERVE
    assert 'exec uvicorn "$SERVICE.main:create_app" --factory' in SERVE


def test_the_entry_point_starts_what_each_service_is(tmp_path: Path) -> None:
    """serve.sh run with a stand-in uvicorn and alembic on PATH: the commands it would run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("uvicorn", "alembic"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} "$@" >> {tmp_path}/calls\n')
        (bin_dir / tool).chmod(0o755)
    app = tmp_path / "app"
    for folder in PYTHON_SERVICES.values():
        if (REPO_ROOT / folder / "alembic.ini").exists():
            (app / folder).mkdir(parents=True)
            (app / folder / "alembic.ini").write_text("")
    calls: dict[str, list[str]] = {}
    for folder in PYTHON_SERVICES.values():
        (tmp_path / "calls").unlink(missing_ok=True)
        script = SERVE.replace("/app/", f"{app}/")
        subprocess.run(
            ["sh", "-c", script],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SERVICE": folder},
            check=True,
        )
        calls[folder] = (tmp_path / "calls").read_text().splitlines()
    for folder, lines in calls.items():
        has_migrations = (REPO_ROOT / folder / "alembic.ini").exists()
        assert lines[0].startswith("alembic -c") == has_migrations, folder
        assert lines[-1].startswith(f"uvicorn {folder}.main:create_app --factory --host 0.0.0.0 --port 8000")
        # One write per answer and a stop that does not race the balancer, as under devstack.
        assert " --http common.serving:HttpProtocol " in lines[-1], folder
    assert calls["events_service"][-1].endswith("--ws-max-size 65536 --ws-per-message-deflate false")
    assert calls["qr_ws_service"][-1].endswith("--ws-max-size 65536")


def test_prometheus_grafana_and_the_nginx_exporter_are_there() -> None:
    prometheus = yaml.safe_load((REPO_ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for name in PYTHON_SERVICES:
        # Every replica: compose's DNS answers a service's name with one address per replica.
        assert jobs[name]["dns_sd_configs"] == [{"names": [name], "type": "A", "port": 8000}]
    assert jobs["nginx"]["static_configs"] == [{"targets": ["nginx-exporter:9113"]}]
    assert SERVICES["nginx-exporter"]["command"] == ["--nginx.scrape-uri=http://nginx:8081/stub_status"]
    volumes = SERVICES["grafana"]["volumes"]
    assert "./ops/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    assert "./ops/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    config = "./ops/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert config in SERVICES["prometheus"]["volumes"]


# Settings whose value is a secret: each must come from the environment, with no default.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|PRIVATE_KEY$|_TOKEN$|API_KEY|TICKET_KEY$")
# A credential inside a URL: scheme://user:password@host.
URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]+:(?P<password>[^@\s]*)@")
REQUIRED_ONLY = re.compile(r"^\$\{[A-Z_]+\?[^}]*\}$|^\$\{[A-Z_]+:\?[^}]*\}$")
# What a pasted secret looks like: a key block, or a long run of random-looking characters.
PEM = re.compile(r"-----BEGIN [A-Z ]+-----")
RANDOM_RUN = re.compile(r"[A-Za-z0-9+/_=-]{24,}")


def environments() -> list[tuple[str, str, str]]:
    """(service, setting, raw value) for every environment entry of every service."""
    found = []
    for service, spec in SERVICES.items():
        environment = spec.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        found += [(service, key, str(value)) for key, value in environment.items()]
    return found


def looks_random(text: str) -> bool:
    return any(
        sum(c.isdigit() for c in run) >= 4 and sum(c.isalpha() for c in run) >= 4
        for run in RANDOM_RUN.findall(INTERPOLATION.sub("", text))
    )


def test_secrets_are_not_in_the_file() -> None:
    secrets_seen = 0
    for service, key, value in environments():
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):
            secrets_seen += 1
            assert REQUIRED_ONLY.match(value), f"{service}.{key} = {value!r}: not a required variable"
        url = URL_PASSWORD.match(value)
        if url:
            assert REQUIRED_ONLY.match(url.group("password")), f"{service}.{key}: password in the URL"
    assert secrets_seen >= 4  # postgres, minio, minio-init and users each take one
    for text in strings(COMPOSE):
        assert not PEM.search(text), text
        assert not looks_random(text), text
    for name in PYTHON_SERVICES:
        assert service_env(name, REQUIRED_ENV)["ENVIRONMENT"] == "production"


# What `docker compose up` needs from the environment: the required variables, all documented
# in .env.example with an empty value (the repository holds none of them).
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "pw-from-env",
    "MINIO_ROOT_PASSWORD": "minio-pw",
    "GRAFANA_ADMIN_PASSWORD": "grafana-pw",
    # The trust boundary (common/boundary.py) and each service's database role.
    "EDGE_SECRET": "edge-secret-from-env",
    "SERVICE_SECRET": "service-secret-from-env",
    "USERS_DB_PASSWORD": "users-db-pw",
    "AUTH_DB_PASSWORD": "auth-db-pw",
    "CHAT_DB_PASSWORD": "chat-db-pw",
    "GATEWAY_DB_PASSWORD": "gateway-db-pw",
    "EVENTS_DB_PASSWORD": "events-db-pw",
}
DATABASE_ROLES = {
    "users": ("chat_users", "users-db-pw"),
    "auth": ("chat_auth", "auth-db-pw"),
    "private_chat": ("chat_private_chat", "chat-db-pw"),
    "gateway": ("chat_gateway", "gateway-db-pw"),
    "events": ("chat_events", "events-db-pw"),
}


def test_required_variables_are_documented_and_empty() -> None:
    assert required_variables() == set(REQUIRED_ENV)
    example = (REPO_ROOT / ".env.example").read_text().splitlines()
    for name in REQUIRED_ENV:
        assert f"{name}=" in example, name


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_a_missing_required_variable_stops_compose(missing: str) -> None:
    interpolate_file(REQUIRED_ENV)
    env = {key: value for key, value in REQUIRED_ENV.items() if key != missing}
    with pytest.raises(MissingVariable, match=missing):
        interpolate_file(env)
    with pytest.raises(MissingVariable, match=missing):
        interpolate_file({**env, missing: ""})


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET", env) == "$SET value value"
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d d  d"
    assert interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    assert interpolate("${EMPTY?needed}", env) == ""
    for text in ("${UNSET:?needed}", "${EMPTY:?needed}", "${UNSET?needed}"):
        with pytest.raises(MissingVariable):
            interpolate(text, env)


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
    return {**REQUIRED_ENV, "KEYS": str(keys)}


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
    assert settings.edge_secret_value() == "edge-secret-from-env"
    assert settings.service_secret_value() == "service-secret-from-env"
    if name in DATABASE_ROLES:
        # Each service as its own role, never the superuser (ops/postgres/init-roles.sh).
        role, password = DATABASE_ROLES[name]
        assert settings.database_url == f"postgresql://{role}:{password}@postgres:5432/chat"
    else:
        assert "DATABASE_URL" not in service_env(name, compose_env)


def test_the_database_roles_match_devstacks() -> None:
    """compose's init script makes exactly the roles, memberships and schemas devstack does."""
    from devstack.roles import CONTRACT_READERS, SERVICE_ROLES

    script = (REPO_ROOT / "ops" / "postgres" / "init-roles.sh").read_text()
    for reader in CONTRACT_READERS:
        assert f"CREATE ROLE {reader} NOLOGIN;" in script
    for item in SERVICE_ROLES:
        assert f"CREATE ROLE {item.role} LOGIN PASSWORD" in script
        if item.schema:
            assert f"CREATE SCHEMA {item.schema} AUTHORIZATION {item.role};" in script
        for reader in item.reads:
            grant = next(line for line in script.splitlines() if line.startswith(f"GRANT {reader} TO"))
            assert item.role in grant.replace(",", " ").replace(";", " ").split()
    assert "--auth-local=scram-sha-256" in SERVICES["postgres"]["environment"]["POSTGRES_INITDB_ARGS"]


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
    assert service_env("nginx", REQUIRED_ENV)["EVENTS_UPSTREAMS"] == "events:8000"
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
        "EDGE_SECRET": "edge-secret-from-env",
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
        assert "server 127.0.0.1:5 max_fails=0;" in rendered  # the QR hubs' hashed upstream
        assert "server 127.0.0.1:1 max_fails=1 fail_timeout=2s;" in rendered
        assert ("upstream events_service" in rendered) == bool(events)
        assert (tmp_path / "locations" / "events.conf").exists() == bool(events)
        result = subprocess.run(
            [nginx, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


def test_nginx_defaults_have_one_definition(tmp_path: Path) -> None:
    """nginx/defaults.env is what both renderers use: devstack's (make run) and the compose
    image's render-config.sh, where an environment value that is set and not empty wins."""
    from devstack.nginx import NGINX_DEFAULTS

    assert NGINX_DEFAULTS["LOGIN_RATE_LIMIT"] == "10r/s"
    assert "10r/s" not in (REPO_ROOT / "nginx" / "render-config.sh").read_text()
    assert "10r/s" not in (REPO_ROOT / "devstack" / "src" / "devstack" / "nginx.py").read_text()
    script = (
        (REPO_ROOT / "nginx" / "render-config.sh")
        .read_text()
        .replace("/etc/nginx/chat-template", str(REPO_ROOT / "nginx"))
        .replace("prefix=/etc/nginx/chat", f"prefix={tmp_path}")
        .replace("/etc/nginx/nginx.conf", str(tmp_path / "nginx.conf"))
    )
    (tmp_path / "render.sh").write_text(script)
    for override, rate in (
        ({}, "10r/s"),
        ({"LOGIN_RATE_LIMIT": ""}, "10r/s"),
        ({"LOGIN_RATE_LIMIT": "7r/s"}, "7r/s"),
    ):
        subprocess.run(
            ["sh", str(tmp_path / "render.sh")],
            check=True,
            env={"PATH": os.environ["PATH"], "EDGE_SECRET": REQUIRED_ENV["EDGE_SECRET"], **override},
        )
        rendered = (tmp_path / "nginx.conf").read_text()
        assert f"zone=login:10m rate={rate}" in rendered, override
        assert f"client_max_body_size {NGINX_DEFAULTS['AVATAR_MAX_BODY']};" in rendered
