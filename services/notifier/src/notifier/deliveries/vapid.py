"""The VAPID key (RFC 8292) that identifies us to push services: a P-256 key in a PEM file.

Kept apart from the database like every signing key; created on first start
(mode 0600). Browsers subscribe with the public key, so replacing the file
invalidates every push subscription: back it up.
"""

from __future__ import annotations

import base64
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02

from casebridge_shared.keyfiles import read_or_create

log = structlog.get_logger(__name__)


def _new_key() -> bytes:
    vapid = Vapid02()
    vapid.generate_keys()
    pem: bytes = vapid.private_pem()
    return pem


def load_or_create(path: Path) -> Vapid02:
    pem, created = read_or_create(path, _new_key)
    vapid = Vapid02.from_pem(pem)
    if created:
        log.warning("push.vapid_key_created", path=str(path), public_key=application_server_key(vapid))
    return vapid


def application_server_key(vapid: Vapid02) -> str:
    """The public key as browsers want it for ``pushManager.subscribe``: base64url, uncompressed point."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
