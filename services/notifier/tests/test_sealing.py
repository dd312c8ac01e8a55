"""Webhook secrets are sealed at rest with a key kept apart from the database."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from notifier.deliveries import sealing


def test_a_sealed_secret_opens_only_with_its_key_file(tmp_path: Path) -> None:
    path = tmp_path / "notifier" / "webhook-secrets.key"
    box = sealing.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = box.seal("whsec_abc")
    assert sealed.startswith("fernet:") and "whsec_abc" not in sealed
    assert box.seal("whsec_abc") != sealed  # a fresh nonce each time
    # The other process (api or worker) reads the same file and opens it.
    assert sealing.load_or_create(path).open(sealed) == "whsec_abc"
    other = sealing.load_or_create(tmp_path / "elsewhere.key")
    with pytest.raises(ValueError, match="another key"):
        other.open(sealed)
    # A secret stored before sealing existed is used as it is.
    assert box.open("whsec_legacy") == "whsec_legacy"
