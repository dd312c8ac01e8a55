"""The VAPID key (RFC 8292) that identifies us to push services: a P-256 key in a PEM file.

Kept apart from the database like every signing key; created on first start
(mode 0600). Browsers subscribe with the public key, so replacing the file
invalidates every push subscription: back it up.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02

log = structlog.get_logger(__name__)


def load_or_create(path: Path) -> Vapid02:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        vapid = Vapid02()
        vapid.generate_keys()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, vapid.private_pem())
        finally:
            os.close(fd)
        log.warning("push.vapid_key_created", path=str(path), public_key=application_server_key(vapid))
        return vapid
    return Vapid02.from_pem(path.read_bytes())


def application_server_key(vapid: Vapid02) -> str:
    """The public key as browsers want it for ``pushManager.subscribe``: base64url, uncompressed point."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
