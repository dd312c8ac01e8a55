"""Runs of new orders applied by case-handling's handlers: the run's case look-up, ``ANY`` against ``IN``.

The case consumer applies a run of up to 500 order events in one unit of work:
``intake.before_run`` finds the cases of all the run's orders in one locked query,
then each ``order placed`` queues its case and first timeline entry, then the
commit (``bench_order_to_case.py`` measures the same through the broker). This
script does exactly that without a broker, ``--runs`` runs of 500 new orders on
a fresh, migrated database, and prints the look-up's time as the table grows,
twice in the same run, each on its own fresh database:

- now: the look-up as the service builds it (``casebridge_shared.db.one_of``:
  ``= ANY(:order_ids)`` on PostgreSQL, one array parameter);
- before: the same query with ``IN (...)``, a parameter per order id.

Ratio = before / now of the mean look-up time over the last tenth of the runs.
On PostgreSQL the tables are never analysed during the run (a fresh database;
autovacuum is off on this machine), which is when a prepared statement's generic
plan can go wrong; on SQLite both variants are the same ``IN``.

    .venv/bin/python bench/bench_case_runs.py --database postgres
    .venv/bin/python bench/bench_case_runs.py --database sqlite
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import _common as c
from bench_order_to_case import order_event
from sqlalchemy import bindparam

from casebridge_shared.events import CloudEvent
from casebridge_shared.logs import configure_logging

RUN = 500


async def apply_runs(url: str, workdir: Path, runs: int, *, in_list: bool) -> list[float]:
    """Seconds each run's look-up took."""
    from sqlmodel import col, select

    from case_handling.bootstrap import bootstrap
    from case_handling.cases import service as cases
    from case_handling.cases.models import Case
    from case_handling.intake import service as intake
    from case_handling.intake.events import PAYLOAD_MODELS
    from case_handling.settings import Settings

    settings = Settings(
        environment="test", database_url=url, kafka_bootstrap_servers="127.0.0.1:1", var_dir=workdir
    )
    container = bootstrap(settings)
    original = cases._cases_for_orders
    if in_list:
        # The statement as it was before one_of: IN with a parameter per order id.
        def with_in_list(dialect: str) -> Any:
            return (
                select(Case)
                .where(col(Case.order_id).in_(bindparam("order_ids", expanding=True)))
                .with_for_update()
            )

        cases._cases_for_orders = with_in_list  # type: ignore[assignment]
    look_ups: list[float] = []
    number = 0
    try:
        for _ in range(runs):
            run = []
            for _ in range(RUN):
                event = CloudEvent.model_validate_json(order_event(number))
                number += 1
                run.append((event, PAYLOAD_MODELS[event.type].model_validate(event.data)))
            async with container.uow() as uow:
                started = time.perf_counter()
                await intake.before_run(uow, run)
                look_ups.append(time.perf_counter() - started)
                for event, payload in run:
                    await intake.HANDLERS[event.type](uow, event, payload)
                await uow.commit()
    finally:
        cases._cases_for_orders = original  # type: ignore[assignment]
        await container.close()
    return look_ups


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=80, help=f"runs of {RUN} new orders per variant")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    configure_logging("bench", level="WARNING", json=False)
    print(c.machine())
    c.report_background_load()
    results: dict[str, list[float]] = {}
    with c.workdir() as workdir:
        for name, in_list in (("now (one_of)", False), ("before (IN list)", True)):
            own = workdir / ("before" if in_list else "now")
            own.mkdir()
            with c.bench_database(args.database, own, service="case-handling") as url:
                results[name] = c.run(apply_runs(url, own, args.runs, in_list=in_list))
    tail = max(1, args.runs // 10)
    print(
        f"case look-up per run of {RUN} new orders, {args.database}, ms (cases in the table before the run):"
    )
    checkpoints = sorted({0, args.runs // 4, args.runs // 2, 3 * args.runs // 4, args.runs - 1})
    for name, times in results.items():
        cells = ", ".join(f"{c.ms(times[i])} ({i * RUN:,})" for i in checkpoints)
        print(f"  {name}: {cells}")
    now = c.median(results["now (one_of)"][-tail:])
    before = c.median(results["before (IN list)"][-tail:])
    print(
        f"\nsummary ({args.database}): last {tail} runs, median look-up: "
        f"before {c.ms(before)}, now {c.ms(now)}, before / now = {before / now:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
