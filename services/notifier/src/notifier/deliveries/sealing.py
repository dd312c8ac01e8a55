"""Webhook secrets sealed at rest: whoever reads the database (a backup, a replica, an operator)
cannot sign webhooks as us. Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key
kept in a file apart from the database, created on first start (mode 0600) and shared by the api
(which shows a new secret once) and the worker (which signs with it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog
from cryptography.fernet import Fernet, InvalidToken

log = structlog.get_logger(__name__)

PREFIX = "fernet:"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, secret: str) -> str:
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret; a value stored before sealing existed is returned as it is."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise ValueError(
                "a webhook secret was sealed with another key (webhook_secrets_key_file)"
            ) from None


def load_or_create(path: Path) -> SecretBox:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        # The api and the worker may start together: one creates the file, the other reads it.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, key)
            finally:
                os.close(fd)
            log.warning("webhooks.secrets_key_created", path=str(path))
    return SecretBox(path.read_bytes().strip())
