"""Every service's operator CLI offers the shared commands (built once in casebridge_shared.operations)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

SERVICES = ["order-intake", "case-handling", "notifier", "customer-ledger"]


def _run(service: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name(service)
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=120)


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_offers_api_worker_db_and_dead_letters(service: str, tmp_path: Path) -> None:
    env = os.environ | {"COLUMNS": "200"}
    listed = _run(service, "--help", env=env)
    assert listed.returncode == 0, listed.stderr
    for command in ("api", "worker", "db", "dead-letters", "relay"):
        assert f" {command} " in listed.stdout, (command, listed.stdout)

    prefix = "CASEBRIDGE_" + service.upper().replace("-", "_") + "_"
    database = tmp_path / "service.sqlite3"
    env |= {
        prefix + "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "CASEBRIDGE_ENVIRONMENT": "test",
        "CASEBRIDGE_VAR_DIR": str(tmp_path / "var"),  # keys a service creates on first start go here
    }
    upgraded = _run(service, "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert {"outbox", "alembic_version"} <= _tables(database)

    pending = _run(service, "dead-letters", "list", env=env)
    assert pending.returncode == 0, pending.stderr
    # One JSON object per dead letter; the log lines a first start writes (keys created) are not.
    assert '"event_id"' not in pending.stdout, pending.stdout

    status = _run(service, "relay", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout[status.stdout.index("{") :])["backlog"] == 0
    with sqlite3.connect(database) as db:  # one event published an hour ago, as the relay leaves it
        db.execute(
            "INSERT INTO outbox_published (id, event_id, topic, message_key, event_type, payload,"
            " created_at, attempts, published_at) VALUES (1, 'e-1', 't', 'k', 'test', '{}',"
            " datetime('now', '-1 hour'), 1, datetime('now', '-1 hour'))"
        )
    since = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    replayed = _run(service, "relay", "replay", "--since", since, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "1 events queued for republishing" in replayed.stdout
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT event_id FROM outbox").fetchall() == [("e-1",)]

    downgraded = _run(service, "db", "downgrade", "base", env=env)
    assert downgraded.returncode == 0, downgraded.stderr
    assert "outbox" not in _tables(database)
