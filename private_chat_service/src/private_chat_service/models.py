from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
)

SCHEMA = "private_chat"
metadata = MetaData(schema=SCHEMA)

chats = Table(
    "chats",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    # The unordered pair, stored ordered: the unique constraint makes start-chat idempotent
    # for A->B and B->A alike, however many requests race.
    Column("user_low", BigInteger, nullable=False),
    Column("user_high", BigInteger, nullable=False),
    Column("starter_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The time of the last message, or of creation; updated in the send transaction.
    Column("last_activity_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("user_low", "user_high", name="chats_pair_key"),
    CheckConstraint("user_low < user_high", name="chats_pair_ordered"),
    CheckConstraint("starter_id IN (user_low, user_high)", name="chats_starter_member"),
    # chat-list: one index per member side, merged in activity order.
    Index("chats_low_activity", "user_low", "last_activity_at", "id"),
    Index("chats_high_activity", "user_high", "last_activity_at", "id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("chat_id", BigInteger, ForeignKey(chats.c.id, name="messages_chat_fkey"), nullable=False),
    Column("owner_id", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
    Column("answer_id", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("edited_at", DateTime(timezone=True), nullable=True),
    # The only index messages need: a page of one chat is a range scan of it (newest first is a
    # backward scan), and every look-up of one message is by (chat, id). Nothing looks a message
    # up by id alone. A deleted message's row is deleted, so pages never step over tombstones;
    # a reply keeps its answer id (no key: the target may be gone), and the send statement
    # checks that the target is a message of the same chat.
    PrimaryKeyConstraint("chat_id", "id", name="messages_pkey"),
    CheckConstraint("char_length(text) BETWEEN 1 AND 2000", name="messages_text_length"),
)

# Send-once nonces of the last 10 minutes (API.md 18): the key decides racing repeats.
send_nonces = Table(
    "send_nonces",
    metadata,
    Column("chat_id", BigInteger, nullable=False),
    Column("owner_id", BigInteger, nullable=False),
    Column("nonce", Text, nullable=False),
    Column("message_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("chat_id", "owner_id", "nonce", name="send_nonces_pkey"),
    CheckConstraint("char_length(nonce) BETWEEN 1 AND 64", name="send_nonces_nonce_length"),
)

# The users service's published read contract (created by its migrations, not ours).
profiles_metadata = MetaData(schema="users")
public_profiles = Table(
    "public_profiles",
    profiles_metadata,
    Column("id", BigInteger, primary_key=True),
    Column("username", Text),
    Column("avatar_url", Text),
)
