"""Key files created once when several processes start together."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from casebridge_shared.keyfiles import read_or_create


def test_racing_creators_all_get_the_one_key_that_was_kept(tmp_path: Path) -> None:
    path = tmp_path / "service" / "signing-key.pem"
    racers = 6
    # Every racer has found the file missing and made its own key before any of them
    # links it into place: the worst interleaving, every time.
    all_made = threading.Barrier(racers)

    def make(n: int) -> bytes:
        all_made.wait(timeout=30)
        return f"key {n}".encode()

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(lambda n: read_or_create(path, lambda: make(n)), range(racers)))

    contents = {content for content, _ in results}
    assert len(contents) == 1
    assert [created for _, created in results].count(True) == 1
    assert path.read_bytes() in contents
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == [path.name]  # no temporary files left behind


def test_an_existing_file_is_read_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"kept")

    def must_not_run() -> bytes:
        raise AssertionError("an existing key must not be made again")

    assert read_or_create(path, must_not_run) == (b"kept", False)
