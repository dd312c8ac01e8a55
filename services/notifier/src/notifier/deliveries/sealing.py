"""Webhook secrets sealed at rest: whoever reads the database (a backup, a replica, an operator)
cannot sign webhooks as us. ``casebridge_shared.sealing`` with a key kept in a file apart from the
database, created on first start (mode 0600) and shared by the api (which shows a new secret once)
and the worker (which signs with it).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from casebridge_shared.sealing import PREFIX, SecretBox, key_file

log = structlog.get_logger(__name__)

__all__ = ["PREFIX", "SecretBox", "load_or_create"]


def load_or_create(path: Path) -> SecretBox:
    key, created = key_file(path)
    if created:
        log.warning("webhooks.secrets_key_created", path=str(path))
    return SecretBox(key, key_setting="webhook_secrets_key_file")
