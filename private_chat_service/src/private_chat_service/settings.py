from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import DatabaseSettings, RedisSettings


class PrivateChatSettings(DatabaseSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="PRIVATE_CHAT_", extra="ignore", frozen=True)

    # How often each instance deletes send-once nonces past their 10-minute window.
    nonce_sweep_interval_seconds: float = Field(default=60.0, gt=0)
    # The outbox relay (relay.py): rows per batch, how often it looks without being woken, and
    # how long a published event's dedupe mark lasts (a republished batch within it is a no-op).
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    relay_dedupe_seconds: int = Field(default=600, ge=1)
    # Off: nothing publishes the outbox (a deployment without the events service).
    relay_enabled: bool = True
