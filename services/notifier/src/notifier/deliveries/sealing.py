"""Webhook secrets sealed at rest: whoever reads the database (a backup, a replica, an operator)
cannot sign webhooks as us. Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key
kept in a file apart from the database, created on first start (mode 0600) and shared by the api
(which shows a new secret once) and the worker (which signs with it).
"""

from __future__ import annotations

from pathlib import Path

import structlog
from cryptography.fernet import Fernet, InvalidToken

from casebridge_shared.keyfiles import read_or_create

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
    key, created = read_or_create(path, Fernet.generate_key)
    if created:
        log.warning("webhooks.secrets_key_created", path=str(path))
    return SecretBox(key.strip())
