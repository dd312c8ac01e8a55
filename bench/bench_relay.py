"""Relay publish rate from an outbox backlog, against a raw aiokafka producer.

A fresh database gets ``--events`` (50,000) outbox rows in one bulk insert:
realistic ``OrderPlaced`` CloudEvents (~1 KB each, built with the real payload
models) keyed over ``--keys`` (5,000) orders. The real ``OutboxRelay`` (from the
bootstrapped Container, ``relay.start()``, then ``publish_batch()`` until a batch
comes back empty) drains them in-process on the plain asyncio loop, like
``order-intake worker``. The baseline is a raw ``AIOKafkaProducer`` made by
``casebridge_shared.kafka.make_producer`` (acks=all, linger 2 ms, 256 KiB batches,
as the relay's) sending the same payloads, keys and header to another topic of
the same broker, in chunks of the relay's batch size (each chunk's acks awaited,
the relay's flow control) and, for reference, fully pipelined. The raw producer
runs before and after the relay; the ratio uses the median. The relay sends
record batches per partition (``send_batch``), so a second raw baseline sends the
same way: relay over that one is what the database reads and writes cost.

Each phase is preceded by a warm-up (1,000 events) so metadata and connections
are in place. ``--cprofile`` or ``--py-spy PATH`` profiles the relay drain.

    .venv/bin/python bench/bench_relay.py --database sqlite
    .venv/bin/python bench/bench_relay.py --database postgres --py-spy /path/to/py-spy
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common as c
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from sqlalchemy import insert

from casebridge_shared.db import new_id, utcnow
from casebridge_shared.events import CLOUDEVENTS_CONTENT_TYPE, ORDERS_TOPIC, CloudEvent
from casebridge_shared.kafka import ensure_topics, guarded_consumer, make_producer
from casebridge_shared.logs import configure_logging
from casebridge_shared.outbox import OutboxRelay, relay_status

GOAL_RATIO = 0.8
RAW_TOPIC = "bench.relay-raw.{}.v1"  # a fresh topic per raw run, as empty as the relay's
HEADERS = [("content-type", CLOUDEVENTS_CONTENT_TYPE.encode())]
NEED = (
    "We want to hire our first employee abroad. Please review the draft contract, in particular "
    "remote work from another EU country and the non-compete clause."
)


def make_events(count: int, keys: int) -> list[dict[str, Any]]:
    """Outbox rows carrying real ``OrderPlaced`` CloudEvents, ``count // keys`` per order."""
    from order_intake.bootstrap import EVENT_SOURCE
    from order_intake.orders.events import OrderPlaced

    now = utcnow()
    orders = [new_id() for _ in range(keys)]
    customers = [new_id() for _ in range(max(1, keys // 10))]
    product = {
        "product_id": new_id(),
        "title": "Employment contract review (cross-border)",
        "description": "A lawyer reviews an employment contract.",
        "deliverables": ["Annotated contract", "30-minute call"],
        "category": "employment",
        "price": Decimal("349.00"),
        "currency": "EUR",
        "version": 3,
    }
    rows = []
    for i in range(count):
        order_id = orders[i % keys]
        customer_id = customers[i % len(customers)]
        version = i // keys + 1
        payload = OrderPlaced(
            order_id=order_id,
            customer={
                "customer_id": customer_id,
                "full_name": f"Customer {i % len(customers)}",
                "email": f"customer{i % len(customers)}@example.org",
                "phone": "+49 30 1234567",
            },
            product=product,
            description=NEED,
            status="submitted",
            version=version,
            created_at=now,
            updated_at=now,
        )
        event = CloudEvent(
            id=new_id(),
            source=EVENT_SOURCE,
            type=payload.event_type,
            subject=order_id,
            time=now,
            partitionkey=order_id,
            aggregateversion=version,
            traceparent=f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01",
            data=payload.model_dump(mode="json"),
        )
        rows.append(
            {
                "event_id": event.id,
                "topic": ORDERS_TOPIC,
                "message_key": order_id,
                "event_type": event.type,
                "payload": event.to_bytes().decode(),
                "created_at": now,
            }
        )
    return rows


async def bulk_insert(container: Any, rows: list[dict[str, Any]]) -> float:
    from order_intake.db import outbox

    started = time.perf_counter()
    async with container.db.write_session() as session:
        for i in range(0, len(rows), 5000):
            await session.execute(insert(outbox.outbox), rows[i : i + 5000])
        await session.commit()
    return time.perf_counter() - started


class Timed:
    """Wraps an async method of one object and adds up the time spent in it."""

    def __init__(self, obj: Any, name: str) -> None:
        self.seconds = 0.0
        self.calls = 0
        original: Callable[..., Awaitable[Any]] = getattr(obj, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        setattr(obj, name, timed)


async def drain(relay: OutboxRelay) -> tuple[int, int, float]:
    published = batches = 0
    started = time.perf_counter()
    while True:
        runs = await relay.drain()
        for run in runs:
            if run.error is not None:
                raise RuntimeError(run.error)
            published += run.published
            batches += 1 if run.detected else 0
        if runs[-1].detected < relay.batch_size:
            await relay.settle()  # the relay's job ends when every row is marked published
            return published, batches, time.perf_counter() - started


async def raw_send(
    producer: AIOKafkaProducer, topic: str, messages: list[tuple[bytes, bytes]], chunk: int | None
) -> float:
    """Send everything; ``chunk``: await the acks of each chunk before the next (the relay's pattern)."""
    started = time.perf_counter()
    step = chunk or len(messages)
    for i in range(0, len(messages), step):
        futures = [
            await producer.send(topic, value=value, key=key, headers=HEADERS)
            for key, value in messages[i : i + step]
        ]
        await asyncio.gather(*futures)
    return time.perf_counter() - started


async def raw_send_batched(
    producer: AIOKafkaProducer, topic: str, messages: list[tuple[bytes, bytes]], chunk: int
) -> float:
    """Send everything as the relay does: record batches per partition, each chunk's acks awaited."""
    started = time.perf_counter()
    partitions = list(await producer.partitions_for(topic))
    partition_of = DefaultPartitioner()
    for i in range(0, len(messages), chunk):
        batches: dict[int, Any] = {}
        futures = []
        for key, value in messages[i : i + chunk]:
            partition = partition_of(key, partitions, partitions)
            batch = batches.get(partition)
            if batch is None or batch.append(key=key, value=value, timestamp=None, headers=HEADERS) is None:
                if batch is not None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=HEADERS)
        for partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    return time.perf_counter() - started


async def read_event_ids(bootstrap_servers: str, topic: str, partitions: int) -> list[str]:
    """Every event id on the topic, read from the beginning until nothing comes for 2 s."""
    consumer = guarded_consumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    ids: list[str] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for messages in batches.values():
                ids.extend(json.loads(m.value)["id"] for m in messages)
                quiet_since = time.monotonic()
        return ids
    finally:
        await consumer.stop()


async def throttled_gauges_drain(container: Any, args: Any) -> float:
    """Drain a second backlog with ``_update_gauges`` refreshed at most once a second.

    Quantifies a suggested change without editing the relay: the backlog gauges
    cost a COUNT over the unpublished rows after every batch.
    """
    relay = container.relay()
    original = relay._update_gauges
    last = [0.0]

    async def throttled(*, empty: bool) -> None:
        now = time.monotonic()
        if empty or now - last[0] >= 1.0:
            last[0] = now
            await original(empty=empty)

    relay._update_gauges = throttled
    rows = make_events(args.events, args.keys)
    await bulk_insert(container, rows)
    await relay.start()
    try:
        published, _, seconds = await drain(relay)
    finally:
        await relay.stop()
    rate = published / seconds
    print(f"  what-if, gauges at most 1/s:          {rate:8.0f} events/s ({published} in {seconds:.1f}s)")
    return rate


@dataclass
class RelayRound:
    rate: float
    seconds: float
    batches: int
    cpu: float
    broker_cpu: float
    foreign: float
    parts: dict[str, tuple[float, int]]


async def relay_round(
    container: Any, args: Any, broker_pid: int, round_no: int
) -> tuple[RelayRound, list[str], str]:
    """Insert a fresh backlog and drain it with a fresh relay; returns figures, event ids, profile."""
    from order_intake.db import outbox

    rows = make_events(args.events, args.keys)
    seconds = await bulk_insert(container, rows)
    backlog = (await relay_status(container.db, outbox, runs=0)).backlog
    print(f"  round {round_no}: bulk insert {len(rows)} rows in {seconds:.1f}s, backlog {backlog}")
    relay = container.relay()
    await relay.start()
    timers = {name: Timed(relay, name) for name in ("_fetch", "_record", "_update_gauges")}
    try:
        profiler: Any = None
        if round_no == 1 and args.cprofile:
            profiler = cProfile.Profile()
            profiler.enable()
        elif round_no == 1 and args.py_spy:
            profiler = c.Profiler(
                args.py_spy, os.getpid(), Path(args.profile_dir) / f"relay_{args.database}.txt"
            )
            profiler.start()
        broker_cpu = c.CpuClock(broker_pid)
        monitor = c.LoadMonitor()
        cpu0 = time.process_time()
        published, batches, relay_seconds = await drain(relay)
        cpu = (time.process_time() - cpu0) / relay_seconds
        figures = RelayRound(
            rate=published / relay_seconds,
            seconds=relay_seconds,
            batches=batches,
            cpu=cpu,
            broker_cpu=broker_cpu.lap() / relay_seconds,
            foreign=monitor.foreign(),
            parts={name: (t.seconds, t.calls) for name, t in timers.items()},
        )
        profile_text = ""
        if isinstance(profiler, cProfile.Profile):
            profiler.disable()
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer).strip_dirs()
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
            profile_text = buffer.getvalue()
        elif profiler is not None:
            profile_text = profiler.stop()
    finally:
        await relay.stop()
    print(
        f"  round {round_no}: relay publish_batch() {figures.rate:8.0f} events/s "
        f"({published} in {relay_seconds:.1f}s, {batches} batches; CPU: relay {figures.cpu:.0%}, "
        f"broker {figures.broker_cpu:.0%}, other processes {figures.foreign:.0%} of the machine)"
    )
    accounted = 0.0
    for name, (spent, calls) in figures.parts.items():
        accounted += spent
        print(
            f"      {name:<15} {spent:6.2f}s {spent / relay_seconds:5.1%}  "
            f"({calls} calls, {spent / max(1, calls) * 1000:.1f} ms each)"
        )
    print(
        f"      (fetching the next batch and marking the last run alongside sending: the parts overlap, "
        f"{accounted / relay_seconds:.0%} of the time in all)"
    )
    return figures, [r["event_id"] for r in rows], profile_text


async def raw_round(
    producer: AIOKafkaProducer,
    topic: str,
    messages: list[tuple[bytes, bytes]],
    chunk: int | None,
    broker_pid: int,
    label: str,
    *,
    batched: bool = False,
) -> tuple[float, float]:
    broker_cpu = c.CpuClock(broker_pid)
    monitor = c.LoadMonitor()
    if batched:
        assert chunk is not None
        seconds = await raw_send_batched(producer, topic, messages, chunk)
    else:
        seconds = await raw_send(producer, topic, messages, chunk)
    foreign = monitor.foreign()
    rate = len(messages) / seconds
    how = "send_batch per partition" if batched else "send() per message"
    print(
        f"  {label}: raw producer, {how}: {rate:8.0f} events/s  "
        f"(broker CPU {broker_cpu.lap() / seconds:.0%}, other processes {foreign:.0%} of the machine)"
    )
    return rate, foreign


async def bench(args: Any, database_url: str, bootstrap_servers: str, broker_pid: int, workdir: Path) -> int:
    from order_intake.bootstrap import bootstrap
    from order_intake.db import outbox

    settings = c.settings_for(database_url, bootstrap_servers, workdir, relay_batch_size=args.batch_size)
    container = bootstrap(settings)
    producer = make_producer(settings, client_id="bench-raw")
    try:
        t0 = time.perf_counter()
        warmup_rows = make_events(args.warmup, min(args.keys, args.warmup))
        sample = make_events(args.events, args.keys)
        size = sum(len(r["payload"]) for r in sample) / len(sample)
        print(
            f"  built {len(sample)} OrderPlaced CloudEvents, mean {size:.0f} bytes, "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        messages = [(r["message_key"].encode(), r["payload"].encode()) for r in sample]
        warmup_messages = [(r["message_key"].encode(), r["payload"].encode()) for r in warmup_rows]

        raw_topics = [RAW_TOPIC.format(f"r{i}") for i in range(2 * args.rounds + 4)]
        await ensure_topics(settings, raw_topics)
        await producer.start()

        # Warm-up: the relay's topics, metadata, connections, code paths; every raw topic's metadata.
        relay = container.relay()
        await relay.start()
        await bulk_insert(container, warmup_rows)
        await drain(relay)
        await relay.stop()
        for topic in raw_topics:
            await raw_send(producer, topic, warmup_messages[:10], None)
        await raw_send(producer, raw_topics[0], warmup_messages, args.batch_size)

        raw_rates: list[float] = []
        batched_rates: list[float] = []
        relays: list[RelayRound] = []
        foreign: list[float] = []
        expected = {r["event_id"] for r in warmup_rows}
        profile_text = ""
        for round_no in range(1, args.rounds + 1):
            rate, load = await raw_round(
                producer, raw_topics[round_no], messages, args.batch_size, broker_pid, f"round {round_no}"
            )
            raw_rates.append(rate)
            foreign.append(load)
            rate, load = await raw_round(
                producer,
                raw_topics[args.rounds + round_no],
                messages,
                args.batch_size,
                broker_pid,
                f"round {round_no}",
                batched=True,
            )
            batched_rates.append(rate)
            foreign.append(load)
            figures, ids, text = await relay_round(container, args, broker_pid, round_no)
            relays.append(figures)
            foreign.append(figures.foreign)
            expected.update(ids)
            profile_text = profile_text or text
        rate, load = await raw_round(producer, raw_topics[-3], messages, args.batch_size, broker_pid, "after")
        raw_rates.append(rate)
        foreign.append(load)
        rate, load = await raw_round(
            producer, raw_topics[-2], messages, args.batch_size, broker_pid, "after", batched=True
        )
        batched_rates.append(rate)
        foreign.append(load)
        pipelined, _ = await raw_round(producer, raw_topics[-1], messages, None, broker_pid, "pipelined")

        status = await relay_status(container.db, outbox, runs=0)
        on_topic = await read_event_ids(bootstrap_servers, ORDERS_TOPIC, settings.kafka_topic_partitions)
        complete = status.backlog == 0 and len(on_topic) == len(expected) and set(on_topic) == expected
        print(
            f"  check: backlog {status.backlog}; read back {len(on_topic)} events from {ORDERS_TOPIC}, "
            f"{len(set(on_topic))} distinct, expected {len(expected)}: {'ok' if complete else 'MISMATCH'}"
        )
        what_if = await throttled_gauges_drain(container, args) if args.what_if else None
        if profile_text:
            print(f"\nprofile of the relay drain (round 1):\n{profile_text}")

        relay_rate = c.median([r.rate for r in relays])
        raw_rate = c.median(raw_rates)
        batched_rate = c.median(batched_rates)
        ratio = relay_rate / raw_rate
        verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
        parts = {
            name: sum(r.parts[name][0] for r in relays) / sum(r.seconds for r in relays)
            for name in relays[0].parts
        }
        print()
        print(
            f"relay vs raw producer: {args.database}, {args.events} events (~{size:.0f} B) over "
            f"{args.keys} keys, batch {args.batch_size}, {args.rounds} rounds"
        )
        print(
            f"  relay {relay_rate:8.0f} events/s "
            f"(median; rounds: {', '.join(f'{r.rate:.0f}' for r in relays)})"
        )
        print(f"  raw   {raw_rate:8.0f} events/s (median; runs: {', '.join(f'{r:.0f}' for r in raw_rates)})")
        print(
            f"  raw   {batched_rate:8.0f} events/s, send_batch per partition as the relay sends "
            f"(median; runs: {', '.join(f'{r:.0f}' for r in batched_rates)})"
        )
        print(f"  raw   {pipelined:8.0f} events/s (send() per message, fully pipelined, reference)")
        print(f"  ratio relay/raw {ratio:.2f}  (goal >= {GOAL_RATIO}: {verdict})")
        print(
            f"  ratio relay/raw sending as the relay does (record batches per partition): "
            f"{relay_rate / batched_rate:.2f}  (the database's share of the relay's cost)"
        )
        print(
            "  relay time: "
            + ", ".join(f"{name.strip('_')} {share:.0%}" for name, share in parts.items())
            + " (fetch and record run alongside sending, so the shares overlap)"
        )
        warning = "  WARNING: other load skewed these figures" if max(foreign) > 0.1 else ""
        print(f"  other processes used at most {max(foreign):.0%} of the machine in any phase{warning}")
        if what_if is not None:
            print(
                f"  what-if (not the shipped code): relay with backlog gauges refreshed at most once a "
                f"second: {what_if:.0f} events/s, ratio {what_if / raw_rate:.2f}"
            )
        return 0 if complete else 1
    finally:
        await producer.stop()
        await container.close()


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2, help="raw run + relay drain pairs, then one more raw run")
    p.add_argument("--keys", type=int, default=5_000)
    p.add_argument("--warmup", type=int, default=1_000)
    p.add_argument(
        "--batch-size", type=int, default=1000, help="relay_batch_size (default: the setting's default)"
    )
    p.add_argument(
        "--what-if",
        action="store_true",
        help="also drain a second backlog with the backlog gauges refreshed at most once a second",
    )
    p.add_argument("--cprofile", action="store_true", help="cProfile the relay drain (main thread only)")
    p.add_argument("--py-spy", help="path to py-spy: sample the relay drain, all threads")
    p.add_argument("--profile-dir", default=tempfile.gettempdir(), help="where py-spy writes")
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
        assert broker.process is not None
        return int(c.run(bench(args, url, broker.bootstrap_servers, broker.process.pid, workdir)))


if __name__ == "__main__":
    sys.exit(main())
