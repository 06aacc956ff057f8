from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)

SCHEMA = "auth"
metadata = MetaData(schema=SCHEMA)

credentials = Table(
    "credentials",
    metadata,
    # This sequence allocates every user id; the users service stores the profile under it.
    Column("user_id", BigInteger, Identity(), primary_key=True),
    Column("email", Text, nullable=True),
    Column("password_hash", Text, nullable=True),
    Column("yandex_id", Text, nullable=True, unique=True),
    # pending: the profile may not exist yet; active: registration finished.
    Column("state", Text, nullable=False, server_default="pending"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("state IN ('pending', 'active')", name="credentials_state"),
    CheckConstraint("email = lower(email)", name="credentials_email_lower"),
    Index("credentials_email_key", "email", unique=True, postgresql_where=text("email IS NOT NULL")),
)

# Failed log-ins per email in the current window: a per-account brake on password guessing that
# nginx's per-address limit cannot give against many addresses.
login_failures = Table(
    "login_failures",
    metadata,
    Column("email", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", DateTime(timezone=True), nullable=False),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", Text, primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Log out everywhere: every token of the user issued before `not_before` is dead. Published to the
# gateway and the events service as the view auth.access_token_cutoffs.
token_cutoffs = Table(
    "token_cutoffs",
    metadata,
    Column("user_id", BigInteger, primary_key=True),
    Column("not_before", DateTime(timezone=True), nullable=False),
)
