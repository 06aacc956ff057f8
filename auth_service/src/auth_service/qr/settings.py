from pathlib import Path

from pydantic import Field, model_validator

from common.settings import BaseServiceSettings, read_secret, refuse_placeholder


class QrTicketSettings(BaseServiceSettings):
    """QR-ticket settings, mixed into AuthSettings (env prefix AUTH_)."""

    # A random secret; the AES-GCM key is derived from it with HKDF-SHA256.
    qr_ticket_key: str | None = Field(default=None, repr=False)
    qr_ticket_key_file: Path | None = None
    qr_ticket_ttl: int = Field(default=120, ge=10, le=600)
    # Unexchanged tickets one user may hold at once (minting more gets 429).
    qr_ticket_max_live_per_user: int = Field(default=20, ge=1, le=1000)

    def qr_ticket_secret(self) -> str:
        secret = read_secret(self.qr_ticket_key, self.qr_ticket_key_file)
        if secret is None or not secret.strip():
            raise ValueError("AUTH_QR_TICKET_KEY or AUTH_QR_TICKET_KEY_FILE must be set")
        return secret.strip()

    @model_validator(mode="after")
    def _qr_secret_present(self) -> "QrTicketSettings":
        refuse_placeholder(self, AUTH_QR_TICKET_KEY=read_secret(self.qr_ticket_key, self.qr_ticket_key_file))
        return self
