from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from common.settings import DatabaseSettings

MIB = 1024 * 1024


class UsersSettings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="USERS_", extra="ignore", frozen=True)

    # Local avatar storage (the default): files under media_root, served by nginx at /media/.
    media_root: Path = Path(".data/media")
    public_base_url: str = "http://127.0.0.1:8080"

    # Avatar checks. nginx's AVATAR_MAX_BODY must stay a little above avatar_max_bytes.
    avatar_max_bytes: int = Field(default=8 * MIB, ge=1)
    avatar_max_side: int = Field(default=1024, ge=16, le=8192)
    avatar_max_pixels: int = Field(default=40_000_000, ge=1)
    avatar_concurrency: int = Field(default=2, ge=1, le=64)

    # S3-compatible storage, chosen when S3_BUCKET is set. Unprefixed names: an operator sets
    # them once for every tool that talks to the bucket.
    s3_bucket: str | None = Field(default=None, validation_alias=AliasChoices("S3_BUCKET"))
    s3_endpoint_url: str | None = Field(default=None, validation_alias=AliasChoices("S3_ENDPOINT_URL"))
    s3_region: str | None = Field(default=None, validation_alias=AliasChoices("S3_REGION"))
    s3_access_key_id: str | None = Field(default=None, validation_alias=AliasChoices("S3_ACCESS_KEY_ID"))
    s3_secret_access_key: str | None = Field(
        default=None, validation_alias=AliasChoices("S3_SECRET_ACCESS_KEY"), repr=False
    )
    s3_public_base_url: str | None = Field(default=None, validation_alias=AliasChoices("S3_PUBLIC_BASE_URL"))
    # Canned ACL put on each object ("public-read" for a bucket whose objects are private by
    # default, e.g. Yandex Object Storage without public access); empty: none is sent.
    s3_object_acl: str = Field(default="", validation_alias=AliasChoices("S3_OBJECT_ACL"))

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_bucket)
