"""Marking published rows: moving them out of the outbox (now) against updating them in place (before).

Until 2026-11-27 the relay marked a published row by setting ``published_at``
(and ``attempts``) in place, with a partial index on ``published_at IS NULL``
to find the pending rows; now it moves the row into ``outbox_published``
(``casebridge_shared.outbox``, ``OutboxRelay._record``). This script times the
two on the same kind of database, one after the other, rounds alternating:

- before: order-intake's schema migrated to the revision before
  ``outbox_published`` and the old statement (``UPDATE outbox SET published_at,
  attempts = attempts + 1 WHERE id = ANY(ids)``; on PostgreSQL with
  ``synchronous_commit = off``, as the relay did) and the job log row, one
  transaction per batch;
- now: the schema at head and the relay's own ``_record`` (the move, the job
  log row), one transaction per batch.

Rows: ``--rows`` (50,000) real ``OrderPlaced`` outbox rows (~1.2 KB, built as
``bench_relay.py`` builds them), marked in batches of ``--batch`` (1,000, the
relay's batch size). No broker: only the database's side is timed.

    .venv/bin/python bench/bench_outbox_marking.py --database postgres
    .venv/bin/python bench/bench_outbox_marking.py --database sqlite
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import _common as c
from alembic.script import ScriptDirectory
from bench_relay import bulk_insert, make_events
from sqlalchemy import text

from casebridge_shared import migrations
from casebridge_shared.db import utcnow
from casebridge_shared.logs import configure_logging
from casebridge_shared.outbox import RelayRun, _Row


def revision_before_outbox_published() -> str:
    from order_intake.db import MIGRATIONS

    scripts = ScriptDirectory.from_config(migrations.alembic_config(MIGRATIONS, "sqlite://"))
    for script in scripts.walk_revisions():
        if Path(script.path).stem.endswith("_outbox_published"):
            assert isinstance(script.down_revision, str)
            return script.down_revision
    raise SystemExit("no outbox_published migration")


async def ids_in_order(container: Any) -> list[int]:
    async with container.db.session() as session:
        return list((await session.execute(text("SELECT id FROM outbox ORDER BY id"))).scalars())


async def mark_before(container: Any, ids: list[int], batch: int) -> float:
    """The old marking: published_at set in place, one transaction per batch."""
    postgres = container.db.dialect == "postgresql"
    statement = text(
        "UPDATE outbox SET published_at = :now, attempts = attempts + 1 WHERE "
        + ("id = ANY(:ids)" if postgres else "id IN (SELECT value FROM json_each(:ids))")
    )
    job_log = text(
        "INSERT INTO relay_runs (relay, started_at, finished_at, detected, published, failed)"
        " VALUES ('bench', :now, :now, :rows, :rows, 0)"
    )
    started = time.perf_counter()
    for i in range(0, len(ids), batch):
        chunk = ids[i : i + batch]
        async with container.db.write_session() as session:
            if postgres:
                await session.execute(text("SET LOCAL synchronous_commit = off"))
            now = utcnow()
            await session.execute(statement, {"now": now, "ids": chunk if postgres else str(chunk)})
            await session.execute(job_log, {"now": now, "rows": len(chunk)})  # as the relay wrote it
            await session.commit()
    return time.perf_counter() - started


async def mark_now(container: Any, ids: list[int], batch: int) -> float:
    """The relay's own marking (``OutboxRelay._record``), one transaction per batch."""
    relay = container.relay()
    started = time.perf_counter()
    for i in range(0, len(ids), batch):
        rows = [_Row(row_id, "", "", "", 0.0) for row_id in ids[i : i + batch]]
        run = RelayRun(started_at=utcnow(), detected=len(rows), published=len(rows))
        await relay._record([(run, rows, [])])
    return time.perf_counter() - started


async def round_of(url: str, workdir: Path, args: Any, which: str) -> float:
    from order_intake.bootstrap import bootstrap

    container = bootstrap(c.settings_for(url, "127.0.0.1:1", workdir))
    try:
        await bulk_insert(container, make_events(args.rows, args.keys))
        ids = await ids_in_order(container)
        seconds = await (mark_before if which == "before" else mark_now)(container, ids, args.batch)
        async with container.db.session() as session:
            left = (await session.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            if which == "before":
                left = (
                    await session.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
                ).scalar_one()
        assert left == 0, f"{which}: {left} rows left unmarked"
        return len(ids) / seconds
    finally:
        await container.db.dispose()


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--keys", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    configure_logging("bench", level="WARNING", json=False)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"machine: {c.machine()}")
    c.report_background_load()
    from order_intake.db import MIGRATIONS

    rates: dict[str, list[float]] = {"before": [], "now": []}
    for round_no in range(1, args.rounds + 1):
        for which in ("before", "now"):
            with c.workdir() as workdir, c.bench_database(args.database, workdir, args.postgres_url) as url:
                if which == "before":
                    migrations.downgrade(MIGRATIONS, url, revision_before_outbox_published())
                rate = c.run(round_of(url, workdir, args, which))
            rates[which].append(rate)
            print(f"  round {round_no}: {which:<6} {rate:9.0f} rows/s marked")
    before, now = c.median(rates["before"]), c.median(rates["now"])
    print(
        f"\nmarking published: {args.database}, {args.rows} rows in batches of {args.batch},"
        f" {args.rounds} rounds"
    )
    print(f"  before (update in place) {before:9.0f} rows/s (median)")
    print(f"  now (move out)           {now:9.0f} rows/s (median)")
    print(f"  ratio now/before {now / before:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
