"""Creates the stack's secrets in a folder when they are missing (docker-compose's `keys` step).

    python scripts/keygen.py /keys [uid]

jwt_ed25519.pem (auth's signing key), jwt_ed25519.pub.pem (the gateway's verifying key) and
qr_ticket.key (the QR-ticket secret). Existing files are kept, so keys survive restarts.
"""

import os
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)


def main(folder: Path, owner: int | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    private_path = folder / "jwt_ed25519.pem"
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        private_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        (folder / "jwt_ed25519.pub.pem").write_bytes(
            key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
    ticket_path = folder / "qr_ticket.key"
    if not ticket_path.exists():
        ticket_path.write_text(secrets.token_urlsafe(32))
    for path in folder.iterdir():
        path.chmod(0o400)
        if owner is not None:
            os.chown(path, owner, owner)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
