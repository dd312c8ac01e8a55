"""The migration that moves published events out of the outbox keeps every event and never reuses an id."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from casebridge_shared import migrations
from casebridge_shared.testing import pg_exec, postgres_url

SERVICES = {
    "order-intake": "order_intake",
    "case-handling": "case_handling",
    "notifier": "notifier",
    "customer-ledger": "customer_ledger",
}
PUBLISHED_AT = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)


def _revisions(script_location: Path) -> tuple[str, str]:
    """The outbox-published revision and the one before it."""
    scripts = ScriptDirectory.from_config(migrations.alembic_config(script_location, "sqlite://"))
    for script in scripts.walk_revisions():
        if Path(script.path).stem.endswith("_outbox_published"):
            assert isinstance(script.down_revision, str)
            return script.revision, script.down_revision
    raise AssertionError("no outbox_published migration")


def _outbox_row(row_id: int, published: bool) -> dict[str, object]:
    return {
        "id": row_id,
        "event_id": str(uuid.uuid4()),
        "topic": "casebridge.test.v1",
        "key": f"k{row_id}",
        "payload": f'{{"n": {row_id}}}',
        "created_at": datetime(2026, 11, 20, 8, row_id, tzinfo=UTC),
        "published_at": PUBLISHED_AT if published else None,
    }


async def _execute(
    url: str, sql: str, rows: list[dict[str, object]] | None = None
) -> list[tuple[object, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), rows) if rows else await conn.execute(text(sql))
            return [tuple(r) for r in result.all()] if result.returns_rows else []
    finally:
        await engine.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    base = postgres_url()
    if base is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'service.sqlite3'}"
        return
    name = f"cbt_migration_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_exec(base, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(pg_exec(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_published_events_move_out_with_their_ids_and_new_ids_stay_above_them(
    service: str, database_url: str
) -> None:
    script_location: Path = importlib.import_module(f"{SERVICES[service]}.db").MIGRATIONS
    revision, before = _revisions(script_location)
    migrations.upgrade(script_location, database_url, before)
    # The highest id is a published one: an outbox emptied of it must not hand it out again.
    rows = [_outbox_row(i, published=i % 2 == 1) for i in range(1, 6)]
    asyncio.run(
        _execute(
            database_url,
            "INSERT INTO outbox (id, event_id, topic, message_key, event_type, payload, created_at,"
            " published_at, attempts) VALUES (:id, :event_id, :topic, :key, 'test', :payload, :created_at,"
            " :published_at, 1)",
            rows,
        )
    )
    if database_url.startswith("postgresql"):
        # The rows above came with their ids; a sequence counts the ids it handed out.
        asyncio.run(_execute(database_url, "SELECT setval(pg_get_serial_sequence('outbox', 'id'), 5)"))

    migrations.upgrade(script_location, database_url, revision)

    pending = asyncio.run(_execute(database_url, "SELECT id, event_id, payload FROM outbox ORDER BY id"))
    published = asyncio.run(
        _execute(database_url, "SELECT id, event_id, payload, attempts FROM outbox_published ORDER BY id")
    )
    assert pending == [(r["id"], r["event_id"], r["payload"]) for r in rows if r["published_at"] is None]
    assert published == [(r["id"], r["event_id"], r["payload"], 1) for r in rows if r["published_at"]]
    new = asyncio.run(
        _execute(
            database_url,
            "INSERT INTO outbox (event_id, topic, message_key, event_type, payload, created_at)"
            " VALUES ('new-event', 't', 'k', 'test', '{}', '2026-11-27 00:00:00') RETURNING id",
        )
    )
    assert new[0][0] == 6

    migrations.downgrade(script_location, database_url, before)
    back = asyncio.run(_execute(database_url, "SELECT id, published_at IS NOT NULL FROM outbox ORDER BY id"))
    assert back == [(1, True), (2, False), (3, True), (4, False), (5, True), (6, False)]
    migrations.upgrade(script_location, database_url, "head")
