"""Where avatar files live: one small interface, a local folder (default) or S3-compatible storage.

Keys look like `avatars/<user_id>/<sha256>.<ext>`; `url(key)` is the absolute address a client
fetches. Every blocking call runs in a worker thread.
"""

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from users_service.settings import UsersSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("users.storage")

_KEY = re.compile(r"^avatars/\d+/[0-9a-f]{64}\.(png|jpg|webp)$")


class StorageError(Exception):
    """The storage backend failed; nothing the client did."""


class AvatarStorage(Protocol):
    name: str

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def delete(self, key: str) -> None: ...

    def url(self, key: str) -> str: ...

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    # Keys are built by the service, never taken from a client; this guards the folder anyway.
    if not _KEY.match(key):
        raise ValueError(f"not an avatar key: {key!r}")
    return key


class LocalStorage:
    """Files under a folder that nginx serves at /media/. nginx workers run as an unprivileged
    user, so folders are 0755 and files 0644 whatever the service's umask is."""

    name = "local"

    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = root.resolve()
        self.base_url = public_base_url.rstrip("/") + "/media/"

    def url(self, key: str) -> str:
        return self.base_url + check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.root / check_key(key)
        try:
            await anyio.to_thread.run_sync(self._write, path, data)
        except OSError as exc:
            raise StorageError(str(exc)) from exc

    async def delete(self, key: str) -> None:
        path = self.root / check_key(key)
        try:
            await anyio.to_thread.run_sync(self._remove, path)
        except OSError as exc:
            raise StorageError(str(exc)) from exc

    async def close(self) -> None:
        return None

    def _write(self, path: Path, data: bytes) -> None:
        self._make_dirs(path.parent)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fchmod(file.fileno(), 0o644)
                os.fsync(file.fileno())
            # Atomic: a reader sees the whole file or none; the same key means the same bytes.
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.exists() and current != self.root:
            missing.append(current)
            current = current.parent
        directory.mkdir(parents=True, exist_ok=True)
        for created in missing:
            created.chmod(0o755)

    @staticmethod
    def _remove(path: Path) -> None:
        path.unlink(missing_ok=True)


class S3Storage:
    """Any S3-compatible service (Yandex Object Storage, MinIO, AWS) through boto3 in a thread."""

    name = "s3"

    def __init__(self, settings: UsersSettings) -> None:
        assert settings.s3_bucket
        self.bucket = settings.s3_bucket
        self.acl = settings.s3_object_acl
        self.base_url = _s3_public_base(settings).rstrip("/") + "/"
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            config=Config(
                connect_timeout=5,
                read_timeout=20,
                retries={"max_attempts": 2, "mode": "standard"},
                # MinIO and most self-hosted servers need path-style; Yandex accepts both.
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            ),
        )

    def url(self, key: str) -> str:
        return self.base_url + check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        extra: dict[str, Any] = {"ACL": self.acl} if self.acl else {}
        await self._call(
            self._client.put_object,
            Bucket=self.bucket,
            Key=check_key(key),
            Body=data,
            ContentType=content_type,
            CacheControl="public, max-age=31536000, immutable",
            **extra,
        )

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=check_key(key))

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._client.close)

    @staticmethod
    async def _call(method: Any, **kwargs: Any) -> None:
        def run() -> None:
            method(**kwargs)

        try:
            await anyio.to_thread.run_sync(run)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(str(exc)) from exc


def _s3_public_base(settings: UsersSettings) -> str:
    if settings.s3_public_base_url:
        return settings.s3_public_base_url
    if settings.s3_endpoint_url:
        return f"{settings.s3_endpoint_url.rstrip('/')}/{settings.s3_bucket}"
    region = settings.s3_region or "us-east-1"
    return f"https://{settings.s3_bucket}.s3.{region}.amazonaws.com"


async def open_storage(settings: UsersSettings) -> AvatarStorage:
    if settings.uses_s3:
        # Building a boto3 client reads files and endpoint data: keep it off the event loop.
        return await anyio.to_thread.run_sync(S3Storage, settings)
    return LocalStorage(settings.media_root, settings.public_base_url)
