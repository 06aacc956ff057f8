from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from auth_service.qr.settings import QrTicketSettings
from common.settings import DatabaseSettings, TokenSettings, read_secret, refuse_placeholder


class AuthSettings(DatabaseSettings, TokenSettings, QrTicketSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", frozen=True)

    jwt_private_key: str | None = Field(default=None, repr=False)
    jwt_private_key_file: Path | None = None
    token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)
    users_service_url: str = "http://127.0.0.1:8103"
    internal_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # argon2id cost (RFC 9106 second recommendation by default: 64 MiB, t=3, p=4).
    argon2_time_cost: int = Field(default=3, ge=1, le=10)
    argon2_memory_kib: int = Field(default=65536, ge=8192, le=1048576)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)
    hashing_concurrency: int = Field(default=4, ge=1, le=64)
    # Per-email brake on password guessing: this many failures in the window → 429 until it ends.
    login_max_failures: int = Field(default=10, ge=1, le=1000)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    pending_registration_timeout_seconds: int = Field(default=120, ge=10)
    housekeeping_interval_seconds: float = Field(default=60.0, gt=0)
    # Yandex ID (implicit flow). Without a client id the Yandex endpoints answer 503. The two URLs
    # also read the unprefixed names YANDEX_OAUTH_URL / YANDEX_LOGIN_URL (tests point them elsewhere).
    yandex_client_id: str | None = Field(
        default=None, validation_alias=AliasChoices("AUTH_YANDEX_CLIENT_ID", "YANDEX_CLIENT_ID")
    )
    yandex_oauth_url: str = Field(
        default="https://oauth.yandex.ru",
        validation_alias=AliasChoices("AUTH_YANDEX_OAUTH_URL", "YANDEX_OAUTH_URL"),
    )
    yandex_login_url: str = Field(
        default="https://login.yandex.ru",
        validation_alias=AliasChoices("AUTH_YANDEX_LOGIN_URL", "YANDEX_LOGIN_URL"),
    )
    yandex_redirect_uri: str | None = None
    yandex_state: str | None = None
    yandex_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    def private_key_pem(self) -> str:
        pem = read_secret(self.jwt_private_key, self.jwt_private_key_file)
        if pem is None:
            raise ValueError("AUTH_JWT_PRIVATE_KEY or AUTH_JWT_PRIVATE_KEY_FILE must be set")
        return pem

    @model_validator(mode="after")
    def _secrets_present(self) -> "AuthSettings":
        pem = read_secret(self.jwt_private_key, self.jwt_private_key_file)
        refuse_placeholder(self, AUTH_JWT_PRIVATE_KEY=pem)
        return self
