"""What an operator relies on: /metrics and /readyz on every instance's own port (never through
nginx), label values that a client cannot multiply, and a dashboard whose every query names a
metric the services really expose."""

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import Stack
from devstack.config import REPO_ROOT, free_port

DASHBOARD = REPO_ROOT / "ops" / "grafana" / "dashboards" / "chat.json"


def service_urls(stack: Stack) -> dict[str, str]:
    return {spec.name: f"http://127.0.0.1:{spec.port}" for spec in stack.services()}


def exposed_families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


async def test_every_instance_exposes_metrics_and_readiness_on_its_own_port(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for name, url in service_urls(stack).items():
            metrics = await http.get(f"{url}/metrics")
            assert metrics.status_code == 200, name
            assert metrics.headers["content-type"].startswith("text/plain"), name
            assert "chat_http_requests_total" in exposed_families(metrics.text), name
            ready = await http.get(f"{url}/readyz")
            assert ready.status_code == 200, (name, ready.text)
            assert ready.json()["status"] == "ok"
            assert all(state == "ok" for state in ready.json()["checks"].values()), name


async def test_nginx_status_answers_on_its_loopback_port_only(stack: Stack, api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        status = await http.get(f"http://127.0.0.1:{stack.config.status_port}/stub_status")
        other = await http.get(f"http://127.0.0.1:{stack.config.status_port}/anything")
    assert status.status_code == 200
    # The format nginx-prometheus-exporter parses.
    exporter_format = r"Active connections: \d+ \nserver accepts handled requests\n \d+ \d+ \d+ \n"
    assert re.match(exporter_format, status.text)
    assert other.status_code == 404
    assert other.json()["code"] == "not_found"
    public = await api.get("/stub_status")
    assert public.status_code == 404
    assert "Active connections" not in public.text


async def test_metrics_and_probes_are_not_routed_by_nginx(api: httpx.AsyncClient) -> None:
    for path in ("/metrics", "/readyz", "/healthz", "/private/../metrics"):
        response = await api.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "chat_http_requests_total" not in response.text


async def test_routes_are_counted_by_template_and_a_url_scan_adds_no_series(
    stack: Stack, api: httpx.AsyncClient, make_user: Any
) -> None:
    alice, bob = await make_user(), await make_user()
    started = await api.post(
        "/private/start-chat/", json={"recipient_id": bob.id, "text": "hi"}, headers=alice.headers
    )
    chat_id = started.json()["chat_id"]
    chat_urls = [url for name, url in service_urls(stack).items() if name.startswith("private_chat")]

    async def chat_metrics() -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            return "\n".join([(await http.get(f"{url}/metrics")).text for url in chat_urls])

    for _ in range(3):
        assert (await api.get(f"/private/{chat_id}/messages", headers=alice.headers)).status_code == 200
    text = await chat_metrics()
    routes = {m.group(1) for m in re.finditer(r'chat_http_requests_total\{[^}]*route="([^"]*)"', text)}
    assert "/private/{chat_id}/messages" in routes
    assert not [route for route in routes if str(chat_id) in route]
    before = len(samples(text, "chat_http_requests_total"))
    # A scan of random URLs, authenticated so that it reaches the service.
    for _ in range(60):
        await api.get(f"/private/{uuid.uuid4().hex}/{uuid.uuid4().hex}", headers=alice.headers)
        await api.get(f"/private/{uuid.uuid4().hex}", headers=alice.headers)
    after = samples(await chat_metrics(), "chat_http_requests_total")
    # At most one new series per instance and status for everything unmatched.
    assert len(after) - before <= 2 * len(chat_urls)
    assert not [line for line in after if re.search(r'route="/private/[0-9a-f]{32}', line)]


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:chat|nginx)_[a-z0-9_]+)\b", target["expr"]):
                names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


# What nginx-prometheus-exporter makes of stub_status (the compose stack runs it beside nginx).
NGINX_EXPORTER_METRICS = {
    "nginx_connections_active",
    "nginx_connections_accepted",
    "nginx_connections_handled",
    "nginx_connections_reading",
    "nginx_connections_writing",
    "nginx_connections_waiting",
    "nginx_http_requests_total",
    "nginx_up",
}


async def test_every_dashboard_query_names_a_metric_the_stack_exposes(stack: Stack) -> None:
    wanted = dashboard_metrics()
    assert len(wanted) >= 12
    exposed: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as http:
        for url in service_urls(stack).values():
            families = exposed_families((await http.get(f"{url}/metrics")).text)
            # A counter's family is named without _total in TYPE lines of the text format.
            exposed |= families | {family + "_total" for family in families}
    missing = {name for name in wanted if name not in exposed and name not in NGINX_EXPORTER_METRICS}
    assert missing == set()


async def test_redis_calls_are_counted_by_operation(
    stack: Stack, api: httpx.AsyncClient, make_user: Any
) -> None:
    """The dashboard's Redis panel: the chat service's rate limits and relay, and the event
    gateway's reads, are counted (the counters once had no samples at all)."""
    alice, bob = await make_user(), await make_user()
    started = await api.post(
        "/private/start-chat/", json={"recipient_id": bob.id, "text": "hi"}, headers=alice.headers
    )
    assert started.status_code == 200, started.text

    def counted(text: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in samples(text, "chat_redis_calls_total"):
            operation = re.search(r'operation="([^"]+)"', line)
            assert operation is not None, line
            found[operation.group(1)] = found.get(operation.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    async with httpx.AsyncClient(timeout=10) as http:
        by_service: dict[str, dict[str, float]] = {}
        for name, url in service_urls(stack).items():
            service = name.rstrip("0123456789")
            calls = counted((await http.get(f"{url}/metrics")).text)
            for operation, value in calls.items():
                by_service.setdefault(service, {}).setdefault(operation, 0.0)
                by_service[service][operation] += value
    assert sum(by_service.get("private_chat", {}).values()) > 0, by_service
    assert sum(by_service.get("events", {}).values()) > 0, by_service
    assert all(value > 0 for calls in by_service.values() for value in calls.values())


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nothing listens there


async def test_readiness_says_no_while_the_database_is_away_and_liveness_says_yes(closed_port: int) -> None:
    from private_chat_service.main import create_app
    from private_chat_service.settings import PrivateChatSettings

    app = create_app(
        PrivateChatSettings(
            DATABASE_URL=f"postgresql://chat@127.0.0.1:{closed_port}/chat", LOG_LEVEL="WARNING"
        )
    )
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["checks"]["database"] != "ok"


def test_dashboard_file_is_valid_grafana_json() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    assert dashboard["uid"] == "chat-overview"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["targets"] for panel in dashboard["panels"])
