from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.ratelimit import Limit, Rate, rate_setting
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

    # Rate limits (API.md 21): `<count>/<seconds>`, `0` for none. Sends per user per chat;
    # chats started per user. Named as API.md names them (the prefixed names work too).
    send_rate_limit: str = Field(
        default="5/5", validation_alias=AliasChoices("SEND_RATE_LIMIT", "PRIVATE_CHAT_SEND_RATE_LIMIT")
    )
    start_chat_rate_limit: str = Field(
        default="10/60",
        validation_alias=AliasChoices("START_CHAT_RATE_LIMIT", "PRIVATE_CHAT_START_CHAT_RATE_LIMIT"),
    )
    # With Redis unreachable, limited requests are let through: the outage is logged at most once
    # per this many seconds, and Redis is asked again after rate_limit_retry_seconds.
    rate_limit_outage_log_seconds: float = Field(default=60.0, gt=0)
    rate_limit_retry_seconds: float = Field(default=1.0, gt=0, le=60)
    # The limiter's own Redis calls give up after this (then the request is let through).
    rate_limit_redis_timeout_seconds: float = Field(default=0.5, gt=0, le=10)

    _rates = field_validator("send_rate_limit", "start_chat_rate_limit")(rate_setting)

    @property
    def send_limit(self) -> Limit | None:
        rate = Rate.parse(self.send_rate_limit)
        return Limit("send", rate) if rate else None

    @property
    def start_chat_limit(self) -> Limit | None:
        rate = Rate.parse(self.start_chat_rate_limit)
        return Limit("start_chat", rate) if rate else None
