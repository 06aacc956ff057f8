"""Bench data, written straight into the stack's database (fast, and it respects the ownership:
auth.credentials allocates the ids, users.users holds the profile under the same id)."""

from dataclasses import dataclass
from pathlib import Path

import asyncpg
from argon2 import PasswordHasher

from auth_service.tokens import TokenIssuer, load_private_key

PASSWORD = "bench password 123"
ISSUER = "chat-auth"
AUDIENCE = "chat-api"


@dataclass
class BenchUser:
    id: int
    email: str
    token: str


@dataclass
class SeedData:
    users: list[BenchUser]
    # (chat id, member) pairs of the small chats: each user is in exactly one.
    pair_chats: list[tuple[int, BenchUser]]
    big_chat: int
    big_members: tuple[BenchUser, BenchUser]
    big_count: int
    big_first_id: int


async def seed(
    dsn: str, key_dir: Path, *, pairs: int, big_messages: int, issuer: str = ISSUER, audience: str = AUDIENCE
) -> SeedData:
    # The same argon2id cost as the auth service's defaults, so log-ins cost what they do for real.
    password_hash = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(PASSWORD)
    private_pem = (key_dir / "jwt_ed25519.pem").read_text()
    issuer_ = TokenIssuer(load_private_key(private_pem), issuer=issuer, audience=audience, ttl=86400)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            rows = await conn.fetch(
                """
                WITH created AS (
                    INSERT INTO auth.credentials (email, password_hash, state)
                    SELECT 'bench' || g || '_' || md5(random()::text) || '@example.com', $1, 'active'
                    FROM generate_series(1, $2) AS g
                    RETURNING user_id, email
                )
                INSERT INTO users.users (id, username)
                SELECT user_id, 'b' || user_id || '_' || substr(md5(email), 1, 6) FROM created
                RETURNING id, (SELECT email FROM created c WHERE c.user_id = users.users.id) AS email
                """,
                password_hash,
                2 * pairs + 2,
            )
            users = [
                BenchUser(r["id"], r["email"], issuer_.issue(r["id"]))
                for r in sorted(rows, key=lambda r: r["id"])
            ]
            small, big_a, big_b = users[: 2 * pairs], users[-2], users[-1]
            lows = [small[2 * i].id for i in range(pairs)]
            highs = [small[2 * i + 1].id for i in range(pairs)]
            chat_rows = await conn.fetch(
                """
                INSERT INTO private_chat.chats (user_low, user_high, starter_id)
                SELECT l, h, l FROM unnest($1::bigint[], $2::bigint[]) AS t(l, h)
                RETURNING id, user_low
                """,
                lows,
                highs,
            )
            by_low = {r["user_low"]: r["id"] for r in chat_rows}
            pair_chats: list[tuple[int, BenchUser]] = []
            for i in range(pairs):
                chat_id = by_low[small[2 * i].id]
                pair_chats += [(chat_id, small[2 * i]), (chat_id, small[2 * i + 1])]
            big_chat = await conn.fetchval(
                "INSERT INTO private_chat.chats (user_low, user_high, starter_id) "
                "VALUES ($1, $2, $1) RETURNING id",
                big_a.id,
                big_b.id,
            )
            first_id = await conn.fetchval(
                """
                INSERT INTO private_chat.messages (chat_id, owner_id, text, created_at)
                SELECT $1, CASE WHEN g % 2 = 0 THEN $2::bigint ELSE $3::bigint END,
                       'history message number ' || g,
                       now() - ($4 - g) * interval '1 second'
                FROM generate_series(1, $4) AS g
                RETURNING id
                """,
                big_chat,
                big_a.id,
                big_b.id,
                big_messages,
            )
            first_id = await conn.fetchval(
                "SELECT min(id) FROM private_chat.messages WHERE chat_id = $1", big_chat
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return SeedData(users, pair_chats, int(big_chat), (big_a, big_b), big_messages, int(first_id))


async def prepare_ceiling_tables(dsn: str) -> None:
    """Tables shaped, indexed and keyed like private_chat's, for pgbench's write ceiling."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            DROP SCHEMA IF EXISTS bench_ceiling CASCADE;
            CREATE SCHEMA bench_ceiling;
            CREATE TABLE bench_ceiling.chats (LIKE private_chat.chats INCLUDING ALL);
            INSERT INTO bench_ceiling.chats OVERRIDING SYSTEM VALUE SELECT * FROM private_chat.chats;
            CREATE TABLE bench_ceiling.messages (LIKE private_chat.messages INCLUDING ALL);
            ALTER TABLE bench_ceiling.messages
                ADD FOREIGN KEY (chat_id) REFERENCES bench_ceiling.chats (id);
            ANALYZE bench_ceiling.chats;
            """
        )
    finally:
        await conn.close()
