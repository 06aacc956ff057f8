"""The trust boundary (issue 12, finding 5): only nginx reaches a service's public routes, only a
service its /internal/ routes, and the private PostgreSQL cluster asks every connection for a
password, each service connecting as a role that owns its schema and reads only what others
publish to it."""

from typing import Any

import asyncpg
import httpx
import pytest
import trusted
import websockets
from websockets.exceptions import InvalidStatus

from common.boundary import EDGE_HEADER, SERVICE_HEADER
from devstack import Stack

pytestmark = pytest.mark.usefixtures("stack")

# A public route of each service that would act for the user named in X-User-Id (or answer
# something) if the service trusted whoever connects to its port.
PUBLIC_ROUTES = {
    "users": ("GET", "/users/me/"),
    "auth": ("GET", "/auth/encrypt_user_data/"),
    "private_chat": ("GET", "/private/chat-list/"),
    "gateway": ("GET", "/gateway/get-token/"),
    "qr_ws": ("GET", "/auth_events/docs"),
    "events": ("GET", "/events/docs"),
}


def refused(response: httpx.Response) -> None:
    assert response.status_code == 403, (response.request.url, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == "untrusted_caller"


async def test_a_service_port_answers_nobody_but_nginx(stack: Stack, make_user: Any) -> None:
    user = await make_user()
    impersonating = {"X-User-Id": str(user.id), "Authorization": f"Bearer {user.token}"}
    async with httpx.AsyncClient(timeout=30) as direct:
        for instance in stack.services():
            method, path = PUBLIC_ROUTES[instance.service]
            url = f"http://127.0.0.1:{instance.port}{path}"
            refused(await direct.request(method, url, headers=impersonating))
            wrong = {**impersonating, EDGE_HEADER: trusted.SECRETS["edge"][:-1] + "x"}
            refused(await direct.request(method, url, headers=wrong))
            # The service secret opens the internal routes, not the public ones.
            refused(await direct.request(method, url, headers={**impersonating, **trusted.service_headers()}))
        # With nginx's secret the same request is served: the secret is all that stood between.
        me = await direct.get(
            f"{stack.instance_url('users1')}/users/me/", headers={**impersonating, **trusted.edge_headers()}
        )
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    # Probes stay open (the supervisor and Prometheus read them).
    async with httpx.AsyncClient(timeout=30) as direct:
        assert (await direct.get(f"{stack.instance_url('users1')}/healthz")).status_code == 200


async def test_a_websocket_straight_to_an_instance_is_refused(stack: Stack) -> None:
    for name in ("events1", "qr_ws1"):
        path = "/events/" if name.startswith("events") else "/auth_events/qr_auth/?client_id=" + "a" * 20
        url = f"ws://127.0.0.1:{stack.config.ports[name]}{path}"
        with pytest.raises(InvalidStatus) as refusal:
            await websockets.connect(url, open_timeout=10)
        assert refusal.value.response.status_code == 403


async def test_internal_endpoints_need_the_service_secret(stack: Stack) -> None:
    far_id = 9_000_000_000_000 + 12
    calls = [
        ("PUT", f"/internal/users/{far_id}", {"username": "boundary_probe"}, "users"),
        ("POST", "/internal/qr/identify", {"token": "x"}, "auth"),
        ("GET", "/internal/hubs?client_id=" + "a" * 20, None, "qr_ws"),
        ("GET", "/internal/stats", None, "events"),
    ]
    async with httpx.AsyncClient(timeout=30) as direct:
        for method, path, body, service in calls:
            urls = [f"http://127.0.0.1:{stack.config.ports[name]}" for name in stack.instances_of(service)]
            if service in stack.config.internal_ports:
                urls.append(stack.internal_url(service))  # the loopback listener services call
            for base in urls:
                for headers in ({}, trusted.edge_headers(), {SERVICE_HEADER: "not-the-service-secret"}):
                    refused(await direct.request(method, base + path, json=body, headers=headers))
        # Nothing was created by the refused calls; the service secret is what the services use.
        identified = await direct.post(
            f"{stack.internal_url('auth')}/internal/qr/identify",
            json={"token": "x"},
            headers=trusted.service_headers(),
        )
    assert identified.status_code == 200
    assert identified.json() == {"user": None}


async def test_nginx_overwrites_a_client_supplied_edge_token(api: httpx.AsyncClient, make_user: Any) -> None:
    user = await make_user()
    for headers in ({EDGE_HEADER: "guess"}, {EDGE_HEADER: trusted.SECRETS["edge"]}):
        spoofed = await api.get("/users/me/", headers={**headers, "X-User-Id": str(user.id)})
        assert spoofed.status_code == 401
    assert (await api.get("/users/me/", headers={**user.headers, EDGE_HEADER: "guess"})).status_code == 200


# ---- PostgreSQL ---------------------------------------------------------------------------------------
async def test_postgres_refuses_a_connection_without_the_password(stack: Stack) -> None:
    assert stack.postgres is not None
    port = stack.postgres.port
    attempts: list[dict[str, Any]] = [
        {"host": "127.0.0.1", "user": "postgres"},
        {"host": "127.0.0.1", "user": "postgres", "password": "postgres"},
        # The local socket asks too (it used to trust any OS user).
        {"host": str(stack.postgres.socket_dir), "user": "postgres"},
        {"host": "127.0.0.1", "user": "chat_auth", "password": "guess"},
    ]
    for attempt in attempts:
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            await asyncpg.connect(port=port, database="chat", timeout=10, **attempt)


async def fetch_as(stack: Stack, service: str, sql: str) -> Any:
    conn = await asyncpg.connect(stack.service_database_urls[service], timeout=10)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("service", "forbidden"),
    [
        ("private_chat", "SELECT * FROM auth.credentials"),
        ("private_chat", "SELECT * FROM users.users"),
        ("events", "SELECT * FROM private_chat.messages"),
        ("events", "SELECT * FROM auth.credentials"),
        ("gateway", "SELECT * FROM auth.credentials"),
        ("gateway", "SELECT * FROM auth.qr_tickets"),
        ("auth", "SELECT * FROM users.users"),
        ("auth", "SELECT * FROM private_chat.chats"),
        ("users", "SELECT * FROM auth.revoked_access_tokens"),
        ("users", "SELECT * FROM private_chat.member_chats"),
    ],
)
async def test_a_service_role_cannot_read_another_schema(stack: Stack, service: str, forbidden: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await fetch_as(stack, service, forbidden + " LIMIT 1")


@pytest.mark.parametrize(
    ("service", "published"),
    [
        ("private_chat", "users.public_profiles"),
        ("auth", "users.public_profiles"),
        ("events", "users.public_profiles"),
        ("events", "private_chat.member_chats"),
        ("events", "auth.revoked_access_tokens"),
        ("events", "auth.access_token_cutoffs"),
        ("gateway", "auth.revoked_access_tokens"),
        ("gateway", "auth.access_token_cutoffs"),
    ],
)
async def test_a_service_role_reads_the_views_published_to_it(
    stack: Stack, service: str, published: str
) -> None:
    await fetch_as(stack, service, f"SELECT * FROM {published} LIMIT 1")


async def test_each_schema_and_everything_in_it_belongs_to_its_service_role(db: asyncpg.Connection) -> None:
    owners = await db.fetch(
        """
        SELECT n.nspname AS schema, pg_get_userbyid(n.nspowner) AS owner,
               array_agg(DISTINCT pg_get_userbyid(c.relowner))
                   FILTER (WHERE c.oid IS NOT NULL) AS object_owners
        FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
        WHERE n.nspname IN ('users', 'auth', 'private_chat')
        GROUP BY n.nspname, n.nspowner
        """
    )
    assert {row["schema"]: (row["owner"], row["object_owners"]) for row in owners} == {
        "users": ("chat_users", ["chat_users"]),
        "auth": ("chat_auth", ["chat_auth"]),
        "private_chat": ("chat_private_chat", ["chat_private_chat"]),
    }


async def test_a_service_role_cannot_write_elsewhere_or_make_schemas(stack: Stack) -> None:
    for service, statement in (
        ("private_chat", "CREATE TABLE auth.sneaky (id int)"),
        ("events", "CREATE TABLE private_chat.sneaky (id int)"),
        ("gateway", "CREATE SCHEMA sneaky"),
        ("users", "DELETE FROM auth.revoked_tokens"),
        ("events", "CREATE TABLE public.sneaky (id int)"),
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await fetch_as(stack, service, statement)
