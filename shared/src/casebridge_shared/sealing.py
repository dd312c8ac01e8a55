"""Secrets sealed at rest: whoever reads the database (a backup, a replica, an operator) gets
ciphertext. Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key kept apart from
the database: a secret from the environment or a secret file, or a key file created on first
start (mode 0600, ``keyfiles.read_or_create``).

Sealed values carry the prefix ``fernet:``; a value stored before sealing existed is opened as it
is, so a service can seal what it finds in plaintext on start.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from casebridge_shared.keyfiles import read_or_create

PREFIX = "fernet:"


class SecretBox:
    def __init__(self, key: bytes, *, key_setting: str = "the sealing key") -> None:
        self._fernet = Fernet(key)
        self._key_setting = key_setting

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return stored.startswith(PREFIX)

    def seal(self, secret: str) -> str:
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret; a value stored before sealing existed is returned as it is."""
        if not self.is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise ValueError(f"a secret was sealed with another key ({self._key_setting})") from None


def key_from_secret(secret: str, *, purpose: str) -> bytes:
    """A Fernet key derived from an operator's secret (any string; HKDF-SHA256, one per purpose)."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(derived)


def key_file(path: Path) -> tuple[bytes, bool]:
    """The Fernet key in ``path`` (0600), created if missing; and whether this call created it."""
    key, created = read_or_create(path, Fernet.generate_key)
    return key.strip(), created
