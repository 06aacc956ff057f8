from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "placeholder"})


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class BaseServiceSettings(BaseSettings):
    """Settings every service reads. Service classes add their own fields under an env prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Environment = Field(
        default=Environment.development,
        validation_alias=AliasChoices("ENVIRONMENT"),
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    log_format: str = Field(default="json", validation_alias=AliasChoices("LOG_FORMAT"))
    # The trust boundary (common.boundary): nginx proves itself with the edge secret, services
    # calling each other's /internal/ routes with the service secret. Inline or from a file.
    edge_secret: str | None = Field(default=None, repr=False, validation_alias="EDGE_SECRET")
    edge_secret_file: Path | None = Field(default=None, validation_alias="EDGE_SECRET_FILE")
    service_secret: str | None = Field(default=None, repr=False, validation_alias="SERVICE_SECRET")
    service_secret_file: Path | None = Field(default=None, validation_alias="SERVICE_SECRET_FILE")

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.production

    def edge_secret_value(self) -> str | None:
        return _stripped(read_secret(self.edge_secret, self.edge_secret_file))

    def service_secret_value(self) -> str | None:
        return _stripped(read_secret(self.service_secret, self.service_secret_file))

    @model_validator(mode="after")
    def _boundary_secrets(self) -> "BaseServiceSettings":
        edge, service = self.edge_secret_value(), self.service_secret_value()
        refuse_placeholder(self, EDGE_SECRET=edge, SERVICE_SECRET=service)
        for name, value in (("EDGE_SECRET", edge), ("SERVICE_SECRET", service)):
            if value is not None and len(value) < 16:
                raise ValueError(f"{name} must be at least 16 characters")
        return self


def _stripped(value: str | None) -> str | None:
    value = value.strip() if value is not None else None
    return value or None


class DatabaseSettings(BaseServiceSettings):
    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/chat",
        validation_alias=AliasChoices("DATABASE_URL"),
    )
    db_pool_size: int = Field(default=10, ge=1, le=200, validation_alias="DB_POOL_SIZE")
    # A database that does not answer gives a 503 after these, not a request hanging.
    db_connect_timeout_seconds: float = Field(
        default=3.0, gt=0, le=120, validation_alias="DB_CONNECT_TIMEOUT_SECONDS"
    )
    db_statement_timeout_seconds: float = Field(
        default=5.0, gt=0, le=3600, validation_alias="DB_STATEMENT_TIMEOUT_SECONDS"
    )

    @model_validator(mode="after")
    def _async_driver(self) -> "DatabaseSettings":
        if not self.database_url.startswith("postgresql"):
            raise ValueError("DATABASE_URL must be a postgresql:// URL")
        return self


class RedisSettings(BaseServiceSettings):
    """Redis: event fan-out and resume buffers, rate-limit counters (one server for the stack)."""

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")


def async_database_url(url: str) -> str:
    """Accept the URL forms operators write (postgres://, postgresql://) and pin asyncpg."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def read_secret(value: str | None, file: Path | None) -> str | None:
    """A secret comes inline or from a file (the docker/k8s secrets way); inline wins."""
    if value:
        return value
    if file is not None:
        return file.read_text()
    return None


def refuse_placeholder(settings: BaseServiceSettings, **secrets: Any) -> None:
    """In production a missing or placeholder secret is a deployment mistake: refuse to start."""
    if not settings.is_production:
        return
    bad = [
        name
        for name, value in secrets.items()
        if value is None or str(value).strip().lower() in PLACEHOLDER_SECRETS
    ]
    if bad:
        raise ValueError(f"production settings need real values for: {', '.join(sorted(bad))}")


class TokenSettings(BaseServiceSettings):
    """Claims both the signer (auth) and the verifier (gateway) must agree on."""

    token_issuer: str = Field(default="chat-auth", validation_alias="TOKEN_ISSUER")
    token_audience: str = Field(default="chat-api", validation_alias="TOKEN_AUDIENCE")
