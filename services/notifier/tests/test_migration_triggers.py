"""The audience triggers (migration 0005) survive later migrations that alter their tables.

On SQLite Alembic's batch mode may rebuild a table, and a rebuilt table has lost its triggers:
then the worker's lasting look-ups (notifier.memo) never hear of a webhook change, and
`db downgrade base` fails at 0005 ("no such trigger"). Checked on the schema files alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from casebridge_shared.migrations import downgrade, upgrade
from notifier.db import MIGRATIONS


def _webhook_triggers(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'webhook_subscriptions'"
        )
        return {r[0] for r in rows}


def _audience_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT version FROM audience_version WHERE id = 1").fetchone()[0])


EXPECTED = {f"webhook_subscriptions_audience_{what}" for what in ("inserted", "updated", "deleted")}


def test_webhook_audience_triggers_survive_upgrade_and_downgrade(tmp_path: Path) -> None:
    path = tmp_path / "notifier.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(MIGRATIONS, url)
    assert _webhook_triggers(path) == EXPECTED

    # The downgrade of 0009 rebuilds webhook_subscriptions to drop its columns.
    downgrade(MIGRATIONS, url, "0008")
    assert _webhook_triggers(path) == EXPECTED
    before = _audience_version(path)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO webhook_subscriptions (id, url, secret, event_types, description, active,"
            " consecutive_failures, created_by, created_at) VALUES ('w-1', 'https://example.org/hook',"
            " 's', '[]', '', 1, 0, 'admin', '2026-12-07 00:00:00')"
        )
    assert _audience_version(path) == before + 1

    upgrade(MIGRATIONS, url)
    assert _webhook_triggers(path) == EXPECTED
    downgrade(MIGRATIONS, url, "base")  # 0005's downgrade finds every trigger it made
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0
