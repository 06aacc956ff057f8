from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import (
    DatabaseSettings,
    RedisSettings,
    TokenSettings,
    read_secret,
    refuse_placeholder,
)


class EventsSettings(DatabaseSettings, TokenSettings, RedisSettings):
    """Every limit of API.md 20 that the contract fixes has its contract value as the default;
    the test stack shortens the timers."""

    model_config = SettingsConfigDict(env_prefix="EVENTS_", extra="ignore", frozen=True)

    # Names this instance in logs and session owners (devstack sets events1, events2, ...).
    instance_id: str = Field(
        default="events", validation_alias=AliasChoices("INSTANCE_ID", "EVENTS_INSTANCE_ID")
    )
    # The token key is the gateway's public key (the same check as auth_request).
    jwt_public_key: str | None = Field(
        default=None, validation_alias=AliasChoices("EVENTS_JWT_PUBLIC_KEY", "GATEWAY_JWT_PUBLIC_KEY")
    )
    jwt_public_key_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("EVENTS_JWT_PUBLIC_KEY_FILE", "GATEWAY_JWT_PUBLIC_KEY_FILE"),
    )
    check_revocation: bool = True
    # HELLO's heartbeat_interval; a session that sends no heartbeat for 1.5 of them is closed 4009.
    heartbeat_interval_ms: int = Field(default=41_250, ge=100, le=600_000)
    # A connection that has not identified (or resumed) this long after HELLO is closed 4009.
    identify_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # A session can be resumed this long after its connection ended.
    resume_window_seconds: float = Field(default=120.0, gt=0, le=86_400)
    # Largest frame a client may send (bytes of the text frame); past it: 4002.
    max_frame_bytes: int = Field(default=4096, ge=256, le=1 << 20)
    # Frames a client may send per window (heartbeats included); the one past it: 4008.
    rate_limit_frames: int = Field(default=120, ge=1)
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    # Frames waiting for a client that does not read; past it the session is closed 4000 (resumable).
    session_queue_limit: int = Field(default=1000, ge=10)
    # How often live sessions' tokens are checked against the revocation list (one query).
    revocation_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # On SIGTERM: how long RECONNECT (op 7) frames get to reach the clients before the stop.
    drain_seconds: float = Field(default=2.0, ge=0, le=60)

    def public_key_pem(self) -> str:
        pem = read_secret(self.jwt_public_key, self.jwt_public_key_file)
        if pem is None:
            raise ValueError("EVENTS_JWT_PUBLIC_KEY (or GATEWAY_JWT_PUBLIC_KEY, or their _FILE) must be set")
        return pem

    @property
    def retention_ms(self) -> int:
        """How long stream entries are kept: the resume window and a minute's margin for
        connections that ended without a word (their records outlive the window by the refresh
        period)."""
        return int((self.resume_window_seconds + 60) * 1000)

    @model_validator(mode="after")
    def _key_present(self) -> "EventsSettings":
        refuse_placeholder(
            self, EVENTS_JWT_PUBLIC_KEY=read_secret(self.jwt_public_key, self.jwt_public_key_file)
        )
        return self
