from pydantic_settings import SettingsConfigDict

from common.settings import DatabaseSettings


class UsersSettings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="USERS_", extra="ignore", frozen=True)
