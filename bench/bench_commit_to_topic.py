"""Commit-to-topic latency: from ``place_order``'s commit to the event arriving on the topic.

Orders are placed in this process through ``order_intake.orders.service.place_order``
with a unit of work from a bootstrapped Container; the relay runs as the real
``order-intake worker`` subprocess; a consumer in this process (partitions assigned
directly, no group) reads ``casebridge.orders.v1``. Latency is the time the consumer
got the event minus the time the commit returned, both ``time.perf_counter()`` of
this process, matched by order id (the event key).

Two phases, open loop (each order is started on schedule, whether or not the
previous one finished):

* idle: one order every 200 ms (goal: on the topic within 100 ms of the commit);
* loaded: 100 orders/s for 20 s.

The consumer asks the broker to answer fetches after at most
``--fetch-max-wait-ms`` (default 10 ms) so it adds little to the figure.

    .venv/bin/python bench/bench_commit_to_topic.py --database sqlite
    .venv/bin/python bench/bench_commit_to_topic.py --database postgres
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _common as c
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from sqlalchemy import select

from casebridge_shared.auth import Principal, Role
from casebridge_shared.db import utcnow
from casebridge_shared.events import ORDERS_TOPIC
from casebridge_shared.kafka import ensure_topics, guarded_consumer
from casebridge_shared.logs import configure_logging

IDLE_GOAL_SECONDS = 0.100


@dataclass
class Clock:
    committed: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)


async def consume(consumer: AIOKafkaConsumer, clock: Clock, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=100, max_records=1000)
        now = time.perf_counter()
        for messages in batches.values():
            for message in messages:
                if message.key is not None:
                    clock.received.setdefault(message.key.decode(), now)


@dataclass
class Phase:
    name: str
    rate: float
    seconds: float
    order_ids: list[str] = field(default_factory=list)
    failures: int = 0
    offered_seconds: float = 0.0
    commit_seconds: list[float] = field(default_factory=list)
    cpu: float = 0.0  # this process (placing orders and consuming), share of one core
    foreign: float = 0.0  # share of the machine used by processes not part of the benchmark
    started_at: datetime | None = None
    finished_at: datetime | None = None


async def run_phase(phase: Phase, container: Any, seed: c.Seed, clock: Clock) -> None:
    from order_intake.orders import service as orders
    from order_intake.orders.models import OrderCreate

    principals = [Principal(subject=cid, roles=frozenset({Role.CUSTOMER})) for cid in seed.customer_ids]
    count = round(phase.rate * phase.seconds)

    async def place(i: int) -> None:
        started = time.perf_counter()
        try:
            async with container.uow() as uow:
                order, _ = await orders.place_order(
                    uow,
                    principals[i % len(principals)],
                    OrderCreate(product_id=seed.product_id, description=f"bench order {phase.name} {i}"),
                    None,
                )
                committed = time.perf_counter()
        except Exception as exc:  # count and go on: the figure is for the orders that committed
            phase.failures += 1
            print(f"  place_order failed: {type(exc).__name__}: {exc}")
            return
        clock.committed[order.id] = committed
        phase.commit_seconds.append(committed - started)
        phase.order_ids.append(order.id)

    tasks = []
    phase.started_at = utcnow()
    cpu0 = time.process_time()
    monitor = c.LoadMonitor()
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / phase.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(place(i)))
    phase.offered_seconds = time.perf_counter() - start
    phase.cpu = (time.process_time() - cpu0) / phase.offered_seconds
    await asyncio.gather(*tasks)
    phase.finished_at = utcnow()
    phase.foreign = monitor.foreign()


async def wait_received(clock: Clock, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(i not in clock.received for i in ids):
        await asyncio.sleep(0.05)


async def relay_runs_between(container: Any, since: datetime, until: datetime) -> str:
    """What the relay's job log says about the phase: batch sizes and the time between runs."""
    from order_intake.db import outbox

    runs = outbox.relay_runs
    async with container.db.session() as session:
        rows = (
            await session.execute(
                select(runs.c.started_at, runs.c.finished_at, runs.c.detected)
                .where(runs.c.started_at >= since, runs.c.started_at <= until)
                .order_by(runs.c.id)
            )
        ).all()
    if len(rows) < 2:
        return f"         relay job log: {len(rows)} runs"
    durations = [(r.finished_at - r.started_at).total_seconds() for r in rows]
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(rows)]
    detected = [r.detected for r in rows]
    return (
        f"         relay job log: {len(rows)} runs, {sum(detected) / len(rows):.1f} events/run "
        f"(max {max(detected)}); "
        f"fetch+send+ack p50 {c.ms(c.percentile(durations, 50))} max {c.ms(max(durations))}; "
        f"from one run's end to the next's start (mark published, gauges, wait) "
        f"p50 {c.ms(c.percentile(gaps, 50))} p99 {c.ms(c.percentile(gaps, 99))} max {c.ms(max(gaps))}"
    )


def report(phase: Phase, clock: Clock, worker_cpu: float | None = None) -> dict[str, float]:
    latencies = [clock.received[i] - clock.committed[i] for i in phase.order_ids if i in clock.received]
    missing = len(phase.order_ids) - len(latencies)
    offered = round(phase.rate * phase.seconds) / phase.offered_seconds if phase.offered_seconds else 0.0
    figures = {
        "p50": c.percentile(latencies, 50),
        "p95": c.percentile(latencies, 95),
        "p99": c.percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "n": len(latencies),
        "missing": missing,
        "foreign": phase.foreign,
    }
    cpu = f", CPU: worker {worker_cpu:.0%}, this process {phase.cpu:.0%}" if worker_cpu is not None else ""
    print(
        f"  {phase.name:<6} {len(phase.order_ids)} orders at {offered:.0f}/s offered "
        f"(commit p50 {c.ms(c.percentile(phase.commit_seconds, 50))}, "
        f"p99 {c.ms(c.percentile(phase.commit_seconds, 99))}; failures {phase.failures}{cpu}; "
        f"other processes {phase.foreign:.0%} of the machine)"
    )
    print(
        f"         commit-to-topic p50 {c.ms(figures['p50'])}  p95 {c.ms(figures['p95'])}  "
        f"p99 {c.ms(figures['p99'])}  max {c.ms(figures['max'])}  not received {missing}"
    )
    return figures


async def bench(args: Any, database_url: str, bootstrap_servers: str, workdir: Path) -> int:
    from order_intake.bootstrap import PUBLISHED_TOPICS, bootstrap

    settings = c.settings_for(database_url, bootstrap_servers, workdir)
    container = bootstrap(settings)
    consumer = guarded_consumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_max_wait_ms,
    )
    env = c.service_env(database_url, bootstrap_servers, workdir)
    worker = c.Process("order-intake-worker", [str(c.VENV_BIN / "order-intake"), "worker"], env, workdir)
    clock = Clock()
    stop = asyncio.Event()
    receiver: asyncio.Task[None] | None = None
    try:
        seed = await c.seed(container, customers=args.customers)
        await ensure_topics(settings, PUBLISHED_TOPICS)
        await consumer.start()
        consumer.assign([TopicPartition(ORDERS_TOPIC, p) for p in range(settings.kafka_topic_partitions)])
        await consumer.seek_to_beginning()
        receiver = asyncio.create_task(consume(consumer, clock, stop))
        worker.start()

        warmup = Phase("warmup", rate=10, seconds=args.warmup / 10)
        await run_phase(warmup, container, seed, clock)
        await wait_received(clock, warmup.order_ids, timeout=60)
        worker.check_alive()
        if any(i not in clock.received for i in warmup.order_ids):
            print(f"warm-up orders did not arrive:\n{worker.log_tail()}")
            return 1
        print(f"  warm-up: {len(warmup.order_ids)} orders arrived")

        idle = Phase("idle", rate=1 / args.idle_interval, seconds=args.idle_orders * args.idle_interval)
        await run_phase(idle, container, seed, clock)
        await wait_received(clock, idle.order_ids, timeout=30)
        idle_figures = report(idle, clock)
        print(await relay_runs_between(container, idle.started_at, idle.finished_at))

        await asyncio.sleep(1.0)
        worker_cpu = c.CpuClock(worker.pid)
        loaded = Phase("loaded", rate=args.rate, seconds=args.seconds)
        await run_phase(loaded, container, seed, clock)
        loaded_worker_cpu = worker_cpu.lap() / loaded.offered_seconds
        await wait_received(clock, loaded.order_ids, timeout=60)
        loaded_figures = report(loaded, clock, loaded_worker_cpu)
        print(await relay_runs_between(container, loaded.started_at, loaded.finished_at))
        worker.check_alive()
    finally:
        stop.set()
        if receiver is not None:
            await receiver
        await consumer.stop()
        worker.stop()
        await container.close()

    met = idle_figures["p99"] <= IDLE_GOAL_SECONDS and idle_figures["missing"] == 0
    print()
    print(f"commit-to-topic latency: {args.database}, relay = order-intake worker subprocess")
    for name, f in (("idle", idle_figures), ("loaded", loaded_figures)):
        print(
            f"  {name:<6} n={f['n']:.0f}  p50 {c.ms(f['p50'])}  p99 {c.ms(f['p99'])}  max {c.ms(f['max'])}"
            f"  missing {f['missing']:.0f}"
        )
    foreign = max(idle_figures["foreign"], loaded_figures["foreign"])
    warning = "  WARNING: other load skewed these figures" if foreign > 0.1 else ""
    print(f"  other processes used at most {foreign:.0%} of the machine in either phase{warning}")
    print(
        f"  goal: idle p99 <= {IDLE_GOAL_SECONDS * 1000:.0f} ms: {'met' if met else 'NOT met'}"
        f" (idle max {c.ms(idle_figures['max'])})"
    )
    return 0 if idle_figures["missing"] == 0 and loaded_figures["missing"] == 0 else 1


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0, help="orders/s in the loaded phase")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the loaded phase")
    p.add_argument("--idle-interval", type=float, default=0.2, help="seconds between idle orders")
    p.add_argument("--idle-orders", type=int, default=50)
    p.add_argument("--warmup", type=int, default=20, help="orders placed (10/s) before measuring")
    p.add_argument("--customers", type=int, default=8)
    p.add_argument("--fetch-max-wait-ms", type=int, default=10)
    args = p.parse_args()
    configure_logging("bench", level="WARNING", json=False)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # sqlmodel: "use session.exec"
    print(f"machine: {c.machine()}")
    c.report_background_load()
    with (
        c.workdir() as workdir,
        c.broker() as broker,
        c.bench_database(args.database, workdir, args.postgres_url) as url,
    ):
        return int(c.run(bench(args, url, broker.bootstrap_servers, workdir)))


if __name__ == "__main__":
    sys.exit(main())
