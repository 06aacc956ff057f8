from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import BaseServiceSettings


class QrWsSettings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QR_", extra="ignore", frozen=True)

    # Names this instance in its internal stats (devstack sets qr1, qr2, ...).
    instance_id: str = "qr"
    # The auth service's loopback address; tickets are accepted there, never decoded here.
    auth_service_url: str = "http://127.0.0.1:8102"
    auth_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A hub lives at most this long from its first client, then gets {"op": "timeout"}.
    hub_ttl: float = Field(default=120.0, gt=0, le=3600)
    # A client that sends nothing (not even a heartbeat) for this long is dropped. Longer than a
    # hub's lifetime by default: API.md makes heartbeats a check the client may run, not a duty,
    # so a quiet client still gets its hub's {"op": "timeout"}. A dead connection is found sooner
    # by the websocket's own pings (uvicorn's, every 20 s).
    heartbeat_timeout: float = Field(default=300.0, gt=0, le=3600)
    # Largest frame a client may send; a ticket message is well under 1 KiB.
    max_frame_bytes: int = Field(default=4096, ge=256, le=1 << 20)
    # Per-connection token bucket: sustained messages per second, and the burst above it.
    rate_per_second: float = Field(default=5.0, gt=0, le=1000)
    rate_burst: int = Field(default=20, ge=1, le=10000)
    # Hubs one instance holds at once; past it a new hub is refused with close code 1013.
    max_hubs: int = Field(default=10000, ge=1)
