"""Order placed -> case visible in case-handling, and the case consumer's apply rate.

Part 1, latency (open loop, 50 and 200 orders/s by default): orders are placed in
this process through ``place_order`` (its own database, a unit of work per
order); the real ``order-intake worker`` (relay) and ``case-handling worker``
(consumer + relay) run as subprocesses on the embedded broker. This process
polls case-handling's database every few milliseconds and notes when each
order's case first appears. Latency = first seen - commit returned, both
``time.perf_counter()`` of this process.

Part 2, apply rate from a backlog: ``--backlog`` order-placed events are
written straight onto ``casebridge.orders.v1``; first a bare aiokafka consumer
(a group, reading to the end and committing, doing nothing else) and then
case-handling's consumer (``EventConsumer``: decode, validate, inbox check, case
+ timeline + case-opened outbox row, a run of events per transaction, offsets
committed after) each read the whole backlog from the start. Both are timed from the
moment they have joined their group (seconds on the embedded broker, not part of the
rate) to the moment everything is read (bare) or applied with its offsets committed
(ours). Ratio = ours / bare (goal 0.5). Second baseline: the rows ours wrote (cases,
timeline entries, outbox and inbox rows) read back, deleted and inserted again with
plain executemany inserts, 500 events' rows a transaction: what keeping those rows
costs through our database layer, with no broker, decoding or domain code. Third
baseline, the floor: the same rows written by the driver alone (stdlib sqlite3
executemany; asyncpg binary COPY on PostgreSQL).

    .venv/bin/python bench/bench_order_to_case.py --database sqlite
    .venv/bin/python bench/bench_order_to_case.py --database postgres
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common as c
import asyncpg
from aiokafka import TopicPartition
from sqlalchemy import func, make_url, select

from casebridge_shared.auth import Principal, Role
from casebridge_shared.events import ORDERS_TOPIC, CloudEvent
from casebridge_shared.kafka import ensure_topics, guarded_consumer, guarded_producer
from casebridge_shared.logs import configure_logging
from casebridge_shared.testing import create_topics

APPLY_GOAL = 0.5


@dataclass
class Phase:
    rate: float
    seconds: float
    committed: dict[str, float] = field(default_factory=dict)
    on_topic: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    failures: int = 0
    foreign: float = 0.0


async def watch_cases(case_db: Any, phases: list[Phase], stop: asyncio.Event, interval: float) -> None:
    """Note when each order's case first appears in case-handling's database."""
    from case_handling.cases.models import Case

    known: set[str] = set()
    since = datetime(1970, 1, 1, tzinfo=UTC)
    while not stop.is_set():
        async with case_db.session() as session:
            rows = (
                await session.execute(
                    select(Case.order_id, Case.created_at).where(Case.created_at >= since)  # type: ignore[arg-type]
                )
            ).all()
        now = time.perf_counter()
        for order_id, created_at in rows:
            if order_id not in known:
                known.add(order_id)
                for phase in phases:
                    if order_id in phase.committed:
                        phase.seen.setdefault(order_id, now)
                # Rows committed late with an earlier created_at are still caught.
                since = max(since, created_at - timedelta(seconds=5))
        await asyncio.sleep(interval)


async def watch_topic(bootstrap: str, phases: list[Phase], stop: asyncio.Event) -> None:
    """Note when each order event reaches ``casebridge.orders.v1`` (splits relay from consumer time)."""
    consumer = guarded_consumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(ORDERS_TOPIC, p) for p in range(6)])
        await consumer.seek_to_beginning()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            now = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    key = (message.key or b"").decode()
                    for phase in phases:
                        if key in phase.committed:
                            phase.on_topic.setdefault(key, now)
    finally:
        await consumer.stop()


async def run_phase(phase: Phase, container: Any, seed: c.Seed) -> None:
    from order_intake.orders import service as orders
    from order_intake.orders.models import OrderCreate

    principals = [Principal(subject=cid, roles=frozenset({Role.CUSTOMER})) for cid in seed.customer_ids]
    count = round(phase.rate * phase.seconds)

    async def place(i: int) -> None:
        try:
            async with container.uow() as uow:
                order, _ = await orders.place_order(
                    uow,
                    principals[i % len(principals)],
                    OrderCreate(product_id=seed.product_id, description=f"bench order {i}"),
                    None,
                )
                phase.committed[order.id] = time.perf_counter()
        except Exception as exc:
            phase.failures += 1
            print(f"  place_order failed: {type(exc).__name__}: {exc}")

    monitor = c.LoadMonitor()
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = start + i / phase.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(place(i)))
    await asyncio.gather(*tasks)
    phase.foreign = monitor.foreign()


async def wait_seen(phase: Phase, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(phase.seen) < len(phase.committed):
        await asyncio.sleep(0.05)


async def latency(
    args: Any, intake_url: str, case_url: str, bootstrap: str, workdir: Path
) -> list[dict[str, Any]]:
    from case_handling.settings import Settings as CaseSettings
    from casebridge_shared.db import Database
    from order_intake.bootstrap import PUBLISHED_TOPICS
    from order_intake.bootstrap import bootstrap as intake_bootstrap

    settings = c.settings_for(intake_url, bootstrap, workdir)
    container = intake_bootstrap(settings)
    env = c.service_env(intake_url, bootstrap, workdir)
    env["CASEBRIDGE_CASE_HANDLING_DATABASE_URL"] = case_url
    env["CASEBRIDGE_CASE_HANDLING_WORKER_METRICS_PORT"] = "0"
    intake_worker = c.Process(
        "order-intake-worker", [str(c.VENV_BIN / "order-intake"), "worker"], env, workdir
    )
    case_worker = c.Process(
        "case-handling-worker", [str(c.VENV_BIN / "case-handling"), "worker"], env, workdir
    )
    case_db = Database(case_url)
    stop = asyncio.Event()
    phases = [Phase(rate=r, seconds=args.seconds) for r in args.rates]
    warmup = Phase(rate=10, seconds=2)
    watcher = asyncio.create_task(watch_cases(case_db, [warmup, *phases], stop, args.poll_ms / 1000))
    topic_watcher: asyncio.Task[None] | None = None
    results = []
    try:
        seed = await c.seed(container, customers=8)
        await ensure_topics(settings, PUBLISHED_TOPICS)
        await ensure_topics(
            CaseSettings(environment="test", kafka_bootstrap_servers=bootstrap), ["casebridge.cases.v1"]
        )
        topic_watcher = asyncio.create_task(watch_topic(bootstrap, [warmup, *phases], stop))
        intake_worker.start()
        case_worker.start()
        await run_phase(warmup, container, seed)
        await wait_seen(warmup, 120)
        if len(warmup.seen) < len(warmup.committed):
            raise RuntimeError(f"warm-up cases did not appear:\n{case_worker.log_tail()}")
        for phase in phases:
            await asyncio.sleep(1)
            cpu_intake, cpu_cases = c.CpuClock(intake_worker.pid), c.CpuClock(case_worker.pid)
            began = time.perf_counter()
            await run_phase(phase, container, seed)
            await wait_seen(phase, 120)
            elapsed = time.perf_counter() - began
            lat = [phase.seen[i] - phase.committed[i] for i in phase.committed if i in phase.seen]
            relay = [phase.on_topic[i] - phase.committed[i] for i in phase.committed if i in phase.on_topic]
            consumer = [phase.seen[i] - phase.on_topic[i] for i in phase.seen if i in phase.on_topic]
            row = {
                "rate": phase.rate,
                "n": len(lat),
                "missing": len(phase.committed) - len(lat),
                "p50": c.percentile(lat, 50),
                "p95": c.percentile(lat, 95),
                "p99": c.percentile(lat, 99),
                "max": max(lat) if lat else float("nan"),
                "cpu_intake": cpu_intake.lap() / elapsed,
                "cpu_cases": cpu_cases.lap() / elapsed,
                "foreign": phase.foreign,
                "failures": phase.failures,
                "relay_p50": c.percentile(relay, 50),
                "relay_p99": c.percentile(relay, 99),
                "consumer_p50": c.percentile(consumer, 50),
                "consumer_p99": c.percentile(consumer, 99),
            }
            results.append(row)
            print(
                f"  {phase.rate:.0f} orders/s: n={row['n']} p50 {c.ms(row['p50'])} p95 {c.ms(row['p95'])} "
                f"p99 {c.ms(row['p99'])} max {c.ms(row['max'])} missing {row['missing']} "
                f"(CPU: intake worker {row['cpu_intake']:.0%}, case worker {row['cpu_cases']:.0%}; "
                f"other processes {row['foreign']:.0%})"
            )
            print(
                f"      of which commit -> on the topic p50 {c.ms(row['relay_p50'])} "
                f"p99 {c.ms(row['relay_p99'])}; on the topic -> case committed "
                f"p50 {c.ms(row['consumer_p50'])} p99 {c.ms(row['consumer_p99'])}"
            )
            intake_worker.check_alive()
            case_worker.check_alive()
    finally:
        stop.set()
        await watcher
        if topic_watcher is not None:
            await topic_watcher
        intake_worker.stop()
        case_worker.stop()
        await case_db.dispose()
        await container.close()
    return results


def order_event(i: int) -> bytes:
    order_id = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake",
        type="casebridge.orders.order-placed.v1",
        time=datetime.now(UTC),
        partitionkey=order_id,
        aggregateversion=1,
        data={
            "order_id": order_id,
            "customer": {
                "customer_id": f"c{i % 97}",
                "full_name": "Bench",
                "email": "b@example.org",
                "phone": None,
            },
            "product": {
                "product_id": "p1",
                "title": "Contract review",
                "description": "A lawyer reviews your contract.",
                "deliverables": ["Review"],
                "category": "contracts",
                "price": "199.00",
                "currency": "EUR",
                "version": 1,
            },
            "description": f"bench backlog order {i}",
            "status": "submitted",
            "version": 1,
            "created_at": now,
            "updated_at": now,
        },
    ).to_bytes()


async def fill_backlog(bootstrap: str, topic: str, count: int) -> None:
    await create_topics(bootstrap, topic)
    producer = guarded_producer(bootstrap, acks="all", linger_ms=5, max_batch_size=262_144)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            value = order_event(i)
            futures.append(
                await producer.send(topic, value=value, key=json.loads(value)["partitionkey"].encode())
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bare_read(bootstrap: str, topic: str, count: int) -> float:
    consumer = guarded_consumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        read = 0
        started = time.perf_counter()
        while read < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for messages in batches.values():
                read += len(messages)
            if batches:
                await consumer.commit()
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def apply_rate(args: Any, case_url: str, bootstrap: str, workdir: Path) -> dict[str, float]:
    from case_handling.bootstrap import bootstrap as case_bootstrap
    from case_handling.cases.models import Case
    from case_handling.settings import Settings as CaseSettings

    topic = f"bench.orders.{uuid.uuid4().hex[:6]}"
    settings = CaseSettings(
        environment="test",
        database_url=case_url,
        kafka_bootstrap_servers=bootstrap,
        var_dir=workdir,
        log_json=True,
    )
    await ensure_topics(settings, [topic])
    started = time.perf_counter()
    await fill_backlog(bootstrap, topic, args.backlog)
    print(f"  backlog: {args.backlog} order events written in {time.perf_counter() - started:.1f} s")
    bare = await bare_read(bootstrap, topic, args.backlog)
    print(f"  bare aiokafka consumer: {args.backlog / bare:,.0f} events/s ({bare:.1f} s)")

    container = case_bootstrap(settings)
    consumer = container.consumer()
    consumer.topics = [topic]
    consumer.group = f"bench-cases-{uuid.uuid4().hex[:6]}"
    async with container.db.session() as session:
        before = int((await session.execute(select(func.count()).select_from(Case))).scalar_one())
    stop = asyncio.Event()
    monitor = c.LoadMonitor()
    task = asyncio.create_task(consumer.run(stop))
    try:
        # Both consumers are timed from the moment they have their partitions (the
        # bare one after start(), which returns once it has joined its group): the
        # group join takes seconds on the embedded broker and is not the apply rate.
        while consumer._consumer is None or not consumer._consumer.assignment():
            if task.done():
                raise RuntimeError("the case consumer stopped before joining its group")
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        partitions = set(consumer._consumer.assignment())
        # Done when its committed offsets reach the end of every partition: offsets
        # are committed after the database commit of their effects.
        ends = await consumer._consumer.end_offsets(list(partitions))
        while any(consumer._positions.get(tp, 0) < end for tp, end in ends.items()):
            if task.done():
                break
            await asyncio.sleep(0.01)
        ours = time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    async with container.db.session() as session:
        made = int((await session.execute(select(func.count()).select_from(Case))).scalar_one()) - before
    foreign = monitor.foreign()
    print(f"  case-handling consumer: {made / ours:,.0f} events/s ({ours:.1f} s, {made} cases)")
    try:
        plain = await plain_rewrite(container.db, made)
    finally:
        await container.close()
    print(f"  plain inserts of the same rows: {plain:,.0f} events/s")
    driver = await driver_rewrite(case_url, made)
    print(f"  the same rows by the database driver alone: {driver:,.0f} events/s")
    ids_only = await driver_rewrite(case_url, made, only=("inbox",))
    print(f"  only the inbox rows (event ids) by the driver: {ids_only:,.0f} events/s")
    return {
        "bare": args.backlog / bare,
        "ours": made / ours,
        "made": made,
        "foreign": foreign,
        "plain": plain,
        "driver": driver,
        "ids_only": ids_only,
    }


async def plain_rewrite(db: Any, events: int) -> float:
    """Events per second if applying one were only inserting the rows ours wrote for it.

    The second baseline: the consumer's own output (cases, timeline entries, outbox
    and inbox rows) read back, deleted, and inserted again with one executemany per
    table in transactions of 500 events' rows; no broker, no decoding, no domain code.
    What any consumer that keeps these rows must at least spend.
    """
    from sqlalchemy import delete, insert

    from case_handling.models import metadata

    rows: dict[Any, list[dict[str, Any]]] = {}
    async with db.session() as session:
        for table in metadata.sorted_tables:
            found = [dict(r._mapping) for r in (await session.execute(select(table))).all()]
            if found and table.name != "alembic_version":
                rows[table] = found
        for table in reversed(list(rows)):
            await session.execute(delete(table))
        await session.commit()
    chunk = 500
    began = time.perf_counter()
    for first in range(0, events, chunk):
        async with db.write_session() as session:
            for table, table_rows in rows.items():
                part = table_rows[first : first + chunk]
                if part:
                    await session.execute(insert(table), part)
            await session.commit()
    return events / (time.perf_counter() - began)


async def driver_rewrite(database_url: str, events: int, only: tuple[str, ...] = ()) -> float:
    """Events per second if keeping one's rows cost only the database driver's bulk insert.

    The third baseline, the floor under the second: the same rows (cases, timeline
    entries, outbox and inbox rows) as stored, read back and deleted, then written
    again with no SQLAlchemy, no asyncio hand-over and no type conversion in Python:
    stdlib ``sqlite3`` ``executemany`` on the file (the pragmas our engine sets), or
    asyncpg's binary ``COPY`` (``copy_records_to_table``) on PostgreSQL; 500 events'
    rows a transaction. Nothing a consumer can do that keeps these rows in this
    database is faster, so ``driver / bare`` bounds any consumer's ratio. ``only``:
    just these tables (``("inbox",)``: the event ids alone, the least any consumer
    that applies each event once must write).
    """
    from case_handling.models import metadata

    url = make_url(database_url)
    names = [
        t.name for t in metadata.sorted_tables if t.name != "alembic_version" and (not only or t.name in only)
    ]
    chunk = 500
    if url.get_backend_name() == "sqlite":
        return await asyncio.to_thread(_sqlite_driver_rewrite, str(url.database), names, events, chunk)
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database=url.database
    )
    try:
        rows: dict[str, tuple[list[str], list[Any]]] = {}
        for name in names:
            found = await conn.fetch(f'SELECT * FROM "{name}"')
            if found:
                rows[name] = (list(found[0].keys()), [tuple(r) for r in found])
        async with conn.transaction():
            for name in reversed(list(rows)):
                await conn.execute(f'DELETE FROM "{name}"')
        began = time.perf_counter()
        for first in range(0, events, chunk):
            async with conn.transaction():
                for name, (columns, table_rows) in rows.items():
                    part = table_rows[first : first + chunk]
                    if part:
                        await conn.copy_records_to_table(name, records=part, columns=columns)
        return events / (time.perf_counter() - began)
    finally:
        await conn.close()


def _sqlite_driver_rewrite(path: str, names: list[str], events: int, chunk: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        rows: dict[str, tuple[str, list[Any]]] = {}
        for name in names:
            cursor = conn.execute(f'SELECT * FROM "{name}"')
            found = cursor.fetchall()
            if found:
                marks = ", ".join("?" for _ in cursor.description)
                rows[name] = (f'INSERT INTO "{name}" VALUES ({marks})', found)
        conn.execute("BEGIN IMMEDIATE")
        for name in reversed(list(rows)):
            conn.execute(f'DELETE FROM "{name}"')
        conn.execute("COMMIT")
        began = time.perf_counter()
        for first in range(0, events, chunk):
            conn.execute("BEGIN IMMEDIATE")
            for statement, table_rows in rows.values():
                part = table_rows[first : first + chunk]
                if part:
                    conn.executemany(statement, part)
            conn.execute("COMMIT")
        return events / (time.perf_counter() - began)
    finally:
        conn.close()


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0])
    p.add_argument("--seconds", type=float, default=15.0, help="length of each latency phase")
    p.add_argument("--poll-ms", type=float, default=5.0, help="how often case-handling's database is polled")
    p.add_argument("--backlog", type=int, default=50_000)
    p.add_argument("--skip-latency", action="store_true")
    args = p.parse_args()
    configure_logging("bench", level="WARNING", json=False)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"machine: {c.machine()}")
    c.report_background_load()
    with c.workdir() as workdir, c.broker() as broker:
        rows: list[dict[str, Any]] = []
        if not args.skip_latency:
            print("order placed -> case visible in case-handling")
            with (
                c.bench_database(args.database, workdir, args.postgres_url) as intake_url,
                c.bench_database(
                    args.database, workdir, args.postgres_url, service="case-handling"
                ) as case_url,
            ):
                rows = c.run(latency(args, intake_url, case_url, broker.bootstrap_servers, workdir))
        print("apply rate from a backlog")
        applied_dir = workdir / "apply"
        applied_dir.mkdir()
        with c.bench_database(
            args.database, applied_dir, args.postgres_url, service="case-handling"
        ) as case_url:
            rate = c.run(apply_rate(args, case_url, broker.bootstrap_servers, applied_dir))
    print()
    print(f"summary ({args.database}, {datetime.now(UTC):%Y-%m-%d})")
    for row in rows:
        print(
            f"  {row['rate']:.0f}/s: p50 {c.ms(row['p50'])}  p99 {c.ms(row['p99'])}  missing {row['missing']}"
        )
    ratio = rate["ours"] / rate["bare"]
    print(
        f"  apply rate: ours {rate['ours']:,.0f}/s vs bare {rate['bare']:,.0f}/s = {ratio:.2f} "
        f"(goal {APPLY_GOAL}: {'met' if ratio >= APPLY_GOAL else 'NOT met'}); "
        f"other processes {rate['foreign']:.0%}"
    )
    print(
        f"  ours vs plain inserts of the same rows ({rate['plain']:,.0f} events/s): "
        f"{rate['ours'] / rate['plain']:.2f}; plain vs bare: {rate['plain'] / rate['bare']:.2f}"
    )
    print(
        f"  the same rows by the driver alone ({rate['driver']:,.0f} events/s): ours "
        f"{rate['ours'] / rate['driver']:.2f} of that; driver vs bare {rate['driver'] / rate['bare']:.2f}, "
        f"the most any consumer keeping these rows could reach"
    )
    print(
        f"  only the event ids by the driver ({rate['ids_only']:,.0f} events/s): "
        f"{rate['ids_only'] / rate['bare']:.2f} of bare"
    )
    return 0 if all(r["missing"] == 0 for r in rows) and rate["made"] >= args.backlog else 1


if __name__ == "__main__":
    sys.exit(main())
