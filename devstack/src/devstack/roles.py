"""Least-privilege database roles for the private cluster: one login role per service that owns
its schema (and runs its migrations), and read-only access to exactly the views other services
publish to it. docker-compose creates the same roles (ops/postgres/init-roles.sh).

A view is published by its owner's migration, which grants SELECT on it to a contract role
(NOLOGIN, below); a reader gets the view by being a member of that role. So the owner decides
what is published, and this table decides who reads it."""

from dataclasses import dataclass

import asyncpg

# The contract roles the owners' migrations grant their published views to.
CONTRACT_READERS = {
    "users_public_reader": "users.public_profiles",
    "auth_tokens_reader": "auth.revoked_access_tokens, auth.access_token_cutoffs",
    "private_chat_members_reader": "private_chat.member_chats",
}


@dataclass(frozen=True)
class ServiceRole:
    service: str  # devstack's service name
    role: str
    schema: str | None  # the schema it owns and migrates, if any
    reads: tuple[str, ...] = ()  # contract roles it is a member of


SERVICE_ROLES = (
    ServiceRole("users", "chat_users", "users"),
    ServiceRole("auth", "chat_auth", "auth", ("users_public_reader",)),
    ServiceRole("private_chat", "chat_private_chat", "private_chat", ("users_public_reader",)),
    ServiceRole("gateway", "chat_gateway", None, ("auth_tokens_reader",)),
    ServiceRole(
        "events",
        "chat_events",
        None,
        ("users_public_reader", "auth_tokens_reader", "private_chat_members_reader"),
    ),
)


def role_of(service: str) -> ServiceRole | None:
    return next((item for item in SERVICE_ROLES if item.service == service), None)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_roles(conn: asyncpg.Connection, database: str, passwords: dict[str, str]) -> None:
    """Idempotent, as the superuser: the roles with these passwords, each schema owned by its
    service's role (objects an older stack created as the superuser are handed over), and no
    access to the database for anyone else."""
    await conn.execute(f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC")
    for reader in CONTRACT_READERS:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", reader):
            await conn.execute(f"CREATE ROLE {_ident(reader)} NOLOGIN")
    for item in SERVICE_ROLES:
        role, password = _ident(item.role), passwords[item.service]
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", item.role)
        # The password is a literal (utility statements take no parameters); it is url-safe
        # base64 by construction, and quoted all the same.
        literal = "'" + password.replace("'", "''") + "'"
        verb = "ALTER" if exists else "CREATE"
        await conn.execute(f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {literal}")
        await conn.execute(f"GRANT CONNECT ON DATABASE {_ident(database)} TO {role}")
        for reader in item.reads:
            await conn.execute(f"GRANT {_ident(reader)} TO {role}")
        if item.schema is not None:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(item.schema)} AUTHORIZATION {role}")
            await conn.execute(f"ALTER SCHEMA {_ident(item.schema)} OWNER TO {role}")
            await _hand_over(conn, item.schema, item.role)


async def _hand_over(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Tables, views and free-standing sequences of the schema that another role owns."""
    rows = await conn.fetch(
        """
        SELECT c.oid::regclass::text AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND pg_get_userbyid(c.relowner) <> $2
          AND NOT EXISTS (
              SELECT 1 FROM pg_depend d
              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
          )
        """,
        schema,
        role,
    )
    for row in rows:
        await conn.execute(f"ALTER TABLE {row['name']} OWNER TO {_ident(role)}")
