"""Development keys: generated into the data folder on first run when none are configured."""

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def ensure_signing_keys(key_dir: Path) -> tuple[Path, Path]:
    private_path = key_dir / "jwt_ed25519.pem"
    public_path = key_dir / "jwt_ed25519.pub.pem"
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        _write_private(private_path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    if not public_path.exists():
        private = load_pem_private_key(private_path.read_bytes(), password=None)
        assert isinstance(private, Ed25519PrivateKey)
        public_path.write_bytes(
            private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
    return private_path, public_path


def ensure_secret(path: Path, nbytes: int = 32) -> Path:
    """A random url-safe secret (e.g. the QR ticket key), generated once."""
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(nbytes).encode())
    return path
