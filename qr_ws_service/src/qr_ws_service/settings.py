from pydantic_settings import SettingsConfigDict

from common.settings import BaseServiceSettings


class QrWsSettings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QR_", extra="ignore", frozen=True)

    auth_service_url: str = "http://127.0.0.1:8102"
    hub_ttl: float = 120.0
