from pydantic_settings import SettingsConfigDict

from common.settings import DatabaseSettings


class PrivateChatSettings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRIVATE_CHAT_", extra="ignore", frozen=True)
