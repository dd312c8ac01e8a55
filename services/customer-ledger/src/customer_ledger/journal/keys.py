"""The journal's signing key: Ed25519, kept in a file outside the database.

An operator who can rewrite the database must not also be able to re-sign
the history: the key lives apart from the data (a mounted secret in
production). On first start the file is created (mode 0600) and its public
key logged; auditors pin the verifier key from `GET /ledger/public-key`.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casebridge_shared.keyfiles import read_or_create
from customer_ledger.journal.signed_note import Signer

log = structlog.get_logger(__name__)


def _new_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_or_create_signer(path: Path, origin: str) -> Signer:
    pem, created = read_or_create(path, _new_key)
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    signer = Signer(origin, loaded)
    if created:
        log.warning("journal.signing_key_created", path=str(path), verifier_key=str(signer.verifier))
    return signer
