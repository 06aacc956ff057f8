from pathlib import Path

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import DatabaseSettings, TokenSettings, read_secret, refuse_placeholder


class GatewaySettings(DatabaseSettings, TokenSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    jwt_public_key: str | None = None
    jwt_public_key_file: Path | None = None
    # Check the revocation list (auth.revoked_access_tokens) on every verification.
    check_revocation: bool = True

    def public_key_pem(self) -> str:
        pem = read_secret(self.jwt_public_key, self.jwt_public_key_file)
        if pem is None:
            raise ValueError("GATEWAY_JWT_PUBLIC_KEY or GATEWAY_JWT_PUBLIC_KEY_FILE must be set")
        return pem

    @model_validator(mode="after")
    def _key_present(self) -> "GatewaySettings":
        refuse_placeholder(
            self, GATEWAY_JWT_PUBLIC_KEY=read_secret(self.jwt_public_key, self.jwt_public_key_file)
        )
        return self
