from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, Table, Text, func

SCHEMA = "users"
metadata = MetaData(schema=SCHEMA)

users = Table(
    "users",
    metadata,
    # The id is allocated by the auth service (the owner of credentials) and handed over here.
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("username", Text, nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False, server_default=""),
    Column("locale", Text, nullable=False, server_default="en"),
    Column("avatar_url", Text, nullable=True),
    Column("avatar_key", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("users_username_prefix", "username", postgresql_ops={"username": "text_pattern_ops"}),
)
