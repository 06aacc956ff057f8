"""The QR-ticket table, in the auth schema's metadata (tickets are their own small domain)."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
)

from auth_service.models import credentials, metadata

# minted -> accepted for one hub's client_id -> consumed (see qr/tickets.py).
qr_tickets = Table(
    "qr_tickets",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", BigInteger, ForeignKey(credentials.c.user_id, ondelete="CASCADE"), nullable=False),
    Column("state", Text, nullable=False),
    Column("client_id", Text, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("accepted_at", DateTime(timezone=True), nullable=True),
    Column("consumed_at", DateTime(timezone=True), nullable=True),
    # The access token that minted the ticket: the ticket dies with it (logout, log out everywhere).
    Column("minted_by_jti", Text, nullable=True),
    Column("minted_by_issued_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("state IN ('minted', 'accepted', 'consumed')", name="qr_tickets_state"),
    CheckConstraint("(state = 'minted') = (client_id IS NULL)", name="qr_tickets_client_id"),
    Index("qr_tickets_expires_at", "expires_at"),
    Index("qr_tickets_user", "user_id", "expires_at"),
)

# The users service's published read contract (created by its migrations, not ours): the hub shows
# the browser who the phone is, and that is exactly a public user object.
profiles_metadata = MetaData(schema="users")
public_profiles = Table(
    "public_profiles",
    profiles_metadata,
    Column("id", BigInteger, primary_key=True),
    Column("username", Text),
    Column("avatar_url", Text),
)
