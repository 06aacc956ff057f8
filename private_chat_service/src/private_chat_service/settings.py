from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import DatabaseSettings


class PrivateChatSettings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRIVATE_CHAT_", extra="ignore", frozen=True)

    # How often each instance deletes send-once nonces past their 10-minute window.
    nonce_sweep_interval_seconds: float = Field(default=60.0, gt=0)
