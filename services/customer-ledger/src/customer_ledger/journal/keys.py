"""The journal's signing key: Ed25519, kept in a file outside the database.

An operator who can rewrite the database must not also be able to re-sign
the history: the key lives apart from the data (a mounted secret in
production). On first start the file is created (mode 0600) and its public
key logged; auditors pin the verifier key from `GET /ledger/public-key`.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from customer_ledger.journal.signed_note import Signer

log = structlog.get_logger(__name__)


def load_or_create_signer(path: Path, origin: str) -> Signer:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
        signer = Signer(origin, key)
        log.warning("journal.signing_key_created", path=str(path), verifier_key=str(signer.verifier))
        return signer
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return Signer(origin, loaded)
