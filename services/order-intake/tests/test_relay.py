"""The outbox relay against a real broker: order, completeness, crashes, outages (A4, C3)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from casebridge_shared.auth import Principal, Role
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.db import new_id, utcnow
from casebridge_shared.events import ORDERS_TOPIC, CloudEvent
from casebridge_shared.kafka import make_producer
from casebridge_shared.outbox import OutboxRelay, mark_for_replay, purge_published, relay_status
from casebridge_shared.testing import TopicReader, counting_calls, mark_published, wait_until
from order_intake.bootstrap import Container
from order_intake.db import outbox
from order_intake.orders import service as orders
from order_intake.orders.models import OrderCreate, OrderUpdate

from .conftest import Factory


@pytest.fixture
def kafka_bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap_servers


@contextlib.asynccontextmanager
async def running_relay(container: Container) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(container.relay().run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def _relay(container: Container, **options: Any) -> OutboxRelay:
    """A relay of the order-intake outbox, with test-specific options."""
    return OutboxRelay(
        container.db, outbox, container.settings, service="order-intake", topics=[ORDERS_TOPIC], **options
    )


async def _all_event_ids(container: Container, topic: str | None = None) -> list[str]:
    """Every event written: those waiting in the outbox and those published."""
    found: list[str] = []
    async with container.db.session() as s:
        for table in (outbox.outbox, outbox.published):
            query = select(table.c.event_id)
            if topic:
                query = query.where(table.c.topic == topic)
            found += (await s.execute(query)).scalars()
    return found


async def _backlog_empty(container: Container) -> bool:
    return (await relay_status(container.db, outbox, runs=0)).backlog == 0


def _principal(user_id: str) -> Principal:
    return Principal(subject=user_id, roles=frozenset({Role.CUSTOMER}))


async def test_relay_publishes_cloudevents_in_order_per_key(
    client: httpx.AsyncClient, factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    auth = factory.auth(customer)
    ids = []
    async with running_relay(container):
        for i in range(5):
            order = (
                await client.post(
                    "/orders", json={"product_id": product.id, "description": f"n{i}"}, headers=auth
                )
            ).json()
            ids.append(order["id"])
            await client.patch(
                f"/orders/{order['id']}", json={"description": "more"}, headers=auth | {"If-Match": '"1"'}
            )
            await client.post(f"/orders/{order['id']}/cancel", headers=auth)
        async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
            events = await reader.read_until(lambda ev: len(ev) >= 15)
            assert (
                len(reader.consumer.partitions_for_topic(ORDERS_TOPIC) or ()) == 6
            )  # the configured default
            assert all(h["content-type"] == b"application/cloudevents+json" for h in reader.headers)
            assert reader.keys == [e["partitionkey"] for e in events]
    by_key: dict[str, list[int]] = defaultdict(list)
    for event in events:
        by_key[event["partitionkey"]].append(event["aggregateversion"])
    assert set(by_key) == set(ids)
    assert all(v == [1, 2, 3] for v in by_key.values())

    status = await relay_status(container.db, outbox)
    assert status.backlog == 0
    assert sum(r["published"] for r in status.last_runs) >= 15
    admin = factory.auth(await factory.user(Role.ADMIN))
    r = await client.get("/relay/status", headers=admin)
    assert r.status_code == 200 and r.json()["last_runs"][0]["detected"] >= 1
    assert (await client.get("/relay/status", headers=auth)).status_code == 403


async def test_thousand_concurrent_orders_reach_the_topic_exactly_once(
    client: httpx.AsyncClient, factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    customers = [await factory.customer() for _ in range(10)]
    product = await factory.product()
    gate = asyncio.Semaphore(50)

    async def place(i: int) -> str:
        async with gate:
            r = await client.post(
                "/orders",
                json={"product_id": product.id, "description": f"need {i}"},
                headers=factory.auth(customers[i % 10]),
            )
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    async with running_relay(container):
        order_ids = await asyncio.gather(*(place(i) for i in range(1000)))
        async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
            await reader.read_until(lambda ev: len(ev) >= 1000, timeout=120)
            await wait_until(lambda: _backlog_empty(container), message="outbox published")
            events = await reader.read_to_end()
    placed = [e for e in events if e["type"] == "casebridge.orders.order-placed.v1"]
    assert len(placed) == 1000
    assert len({e["id"] for e in placed}) == 1000
    assert {e["partitionkey"] for e in placed} == set(order_ids)


async def test_versions_per_key_strictly_increase_under_concurrency(
    factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    principal = _principal(customer.id)
    async with running_relay(container):

        async def lifecycle(i: int) -> None:
            async with container.uow() as uow:
                order, _ = await orders.place_order(
                    uow, principal, OrderCreate(product_id=product.id, description="a"), None
                )
            for version in range(1, 4):
                async with container.uow() as uow:
                    await orders.update_order(
                        uow, principal, order.id, OrderUpdate(description=f"v{version}-{i}"), version
                    )

        await asyncio.gather(*(lifecycle(i) for i in range(40)))
        async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
            events = await reader.read_until(lambda ev: len(ev) >= 160)
    by_key: dict[str, list[int]] = defaultdict(list)
    for event in events:
        by_key[event["partitionkey"]].append(event["aggregateversion"])
    assert len(by_key) == 40
    for versions in by_key.values():
        assert versions == sorted(versions) and len(set(versions)) == len(versions) == 4


def _worker_env(container: Container, broker: EmbeddedBroker, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    env.update(
        {
            "CASEBRIDGE_ENVIRONMENT": "test",
            "CASEBRIDGE_ORDER_INTAKE_DATABASE_URL": container.settings.database_url,
            "CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CASEBRIDGE_ORDER_INTAKE_WORKER_METRICS_PORT": "0",
            "CASEBRIDGE_VAR_DIR": str(tmp_path),
            "CASEBRIDGE_LOG_JSON": "true",
        }
    )
    return env


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).with_name("order-intake")
    return subprocess.Popen([str(script), "worker"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_relay_sigkilled_repeatedly_loses_nothing(
    factory: Factory, container: Container, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    principal = _principal(customer.id)
    env = _worker_env(container, broker, tmp_path)
    log = tmp_path / "worker.log"
    worker = _start_worker(env, log)
    placed = 0
    kills = 0
    async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
        try:
            while placed < 1000:
                for _ in range(50):
                    async with container.uow() as uow:
                        await orders.place_order(
                            uow, principal, OrderCreate(product_id=product.id, description="x"), None
                        )
                    placed += 1
                await reader.poll()
                if placed % 200 == 0:
                    # Kill it mid-flight: wait until it has published something since the last start.
                    seen = len(reader.events)
                    await wait_until(
                        lambda: reader.poll(), timeout=60, message="relay progress"
                    ) if seen == 0 else None
                    worker.send_signal(signal.SIGKILL)
                    worker.wait()
                    kills += 1
                    worker = _start_worker(env, log)
            expected = set(await _all_event_ids(container, ORDERS_TOPIC))
            assert len(expected) == 1000
            await reader.read_until(lambda ev: expected <= {e["id"] for e in ev}, timeout=120)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    counts = Counter(e["id"] for e in reader.events)
    missing = expected - set(counts)
    assert kills == 5
    assert not missing, f"lost {len(missing)} events"
    assert set(counts) == expected  # nothing that was never committed
    status = await relay_status(container.db, outbox)
    assert status.backlog == 0


@pytest.mark.slow
async def test_broker_outage_backlog_grows_then_drains(
    factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    principal = _principal(customer.id)
    container.settings.kafka_request_timeout_ms = 1000  # so the outage shows up as failed runs
    async with running_relay(container), TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
        async with container.uow() as uow:
            await orders.place_order(
                uow, principal, OrderCreate(product_id=product.id, description="before"), None
            )
        await reader.read_until(lambda ev: len(ev) >= 1)
        broker.pause()
        try:
            for i in range(200):
                async with container.uow() as uow:
                    await orders.place_order(
                        uow, principal, OrderCreate(product_id=product.id, description=f"during {i}"), None
                    )

            async def backlog_grew() -> bool:
                return (await relay_status(container.db, outbox)).backlog >= 200

            await wait_until(backlog_grew, timeout=30, message="backlog during outage")

            async def failure_logged() -> bool:
                runs = (await relay_status(container.db, outbox, runs=50)).last_runs
                return any(r["error"] for r in runs)

            await wait_until(failure_logged, timeout=60, message="a failed relay run in the job log")
            status = await relay_status(container.db, outbox)
            assert status.backlog >= 200 and status.oldest_unpublished_age_seconds is not None
        finally:
            broker.resume()
        expected = set(await _all_event_ids(container, ORDERS_TOPIC))
        await reader.read_until(lambda ev: expected <= {e["id"] for e in ev}, timeout=180)

        async def drained() -> bool:
            return (await relay_status(container.db, outbox)).backlog == 0

        await wait_until(drained, timeout=60, message="backlog drained")


def _outbox_row(key: str, created_at: datetime | None = None) -> dict[str, object]:
    event_id = new_id()
    event = CloudEvent(
        id=event_id,
        source="/order-intake",
        type="order-placed",
        subject=key,
        time=utcnow(),
        partitionkey=key,
        aggregateversion=1,
        data={"order_id": key},
    )
    return {
        "event_id": event_id,
        "topic": ORDERS_TOPIC,
        "message_key": key,
        "event_type": "order-placed",
        "payload": event.to_bytes().decode(),
        "created_at": created_at or utcnow(),
    }


async def _unpublished(container: Container, keys: set[str]) -> set[str]:
    query = select(outbox.outbox.c.message_key).where(outbox.outbox.c.message_key.in_(keys))
    async with container.db.session() as s:
        return set((await s.execute(query)).scalars())


async def _none_unpublished(container: Container, keys: set[str]) -> bool:
    return not await _unpublished(container, keys)


async def test_publishing_goes_on_while_marking_rows_published_waits_for_the_database(
    container: Container, broker: EmbeddedBroker
) -> None:
    """The database's write lock held elsewhere (on SQLite: the api placing orders into the
    same file) holds up only the marking: batch after batch still reaches the topic, each
    row exactly once, and is marked once the lock is free."""
    keys = [f"held-{i}" for i in range(3)]
    async with container.db.write_session() as session:
        await session.execute(insert(outbox.outbox), [_outbox_row(k) for k in keys])
        await session.commit()
    relay = _relay(container, batch_size=1)
    stop = asyncio.Event()
    async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
        async with container.db.write_session() as holder:
            # Hold what marking needs: SQLite's write lock; on PostgreSQL the run log
            # that the marking transaction writes to.
            if container.db.dialect == "sqlite":
                await holder.execute(select(1))
            else:
                await holder.execute(text("LOCK TABLE relay_runs IN EXCLUSIVE MODE"))
            task = asyncio.create_task(relay.run(stop))
            # One row per batch: every batch goes out although not even the first is marked.
            await reader.read_until(lambda events: {e["partitionkey"] for e in events} >= set(keys))
            assert await _unpublished(container, set(keys)) == set(keys)
            await holder.rollback()
        await wait_until(lambda: _none_unpublished(container, set(keys)), timeout=30)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await reader.poll()
    assert Counter(e["partitionkey"] for e in reader.events if e["partitionkey"] in keys) == dict.fromkeys(
        keys, 1
    )


async def test_batches_sent_within_the_mark_interval_are_marked_published_in_one_transaction(
    container: Container, broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a trickle of orders each batch holds a row or two: their marking waits for the
    mark interval, so the batches of that time share one write transaction. Rows waiting
    to be marked are not read or sent again; ``settle`` (as at shutdown) marks them at once,
    and so does a pile as large as a batch."""
    keys = [f"trickle-{i}" for i in range(3)]
    relay = _relay(container, batch_size=5)
    relay.mark_interval = 3600.0
    markings = counting_calls(monkeypatch, relay, "_record")
    await relay.start()
    try:
        async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
            for key in keys:
                await _insert_rows(container, [_outbox_row(key)])
                assert [run.published for run in await relay.drain()] == [1]
            assert [run.published for run in await relay.drain()] == [0]
            assert markings == []
            assert await _unpublished(container, set(keys)) == set(keys)
            await relay.settle()
            assert len(markings) == 1
            assert await _unpublished(container, set(keys)) == set()

            pile = [f"pile-{i}" for i in range(5)]
            await _insert_rows(container, [_outbox_row(key) for key in pile])
            assert [run.published for run in await relay.drain()] == [5]
            await wait_until(lambda: _none_unpublished(container, set(pile)), timeout=30)
            assert len(markings) == 2
            await reader.read_until(lambda events: {e["partitionkey"] for e in events} >= {*keys, *pile})
            await reader.poll()
    finally:
        await relay.stop()
    sent = Counter(e["partitionkey"] for e in reader.events)
    assert {key: sent[key] for key in (*keys, *pile)} == dict.fromkeys((*keys, *pile), 1)


async def test_the_backlog_gauge_leaves_out_rows_sent_whose_marking_is_pending(
    container: Container, broker: EmbeddedBroker
) -> None:
    """Rows on the broker but not yet marked published are no backlog: the relay's gauge
    shows only what still has to go out, and its oldest age is that of those rows alone.
    ``relay_status`` from another process (the api's /metrics) still counts them."""
    labels = {"service": "order-intake"}

    def gauges() -> tuple[float | None, float | None]:
        return (
            REGISTRY.get_sample_value("casebridge_relay_backlog", labels),
            REGISTRY.get_sample_value("casebridge_relay_oldest_unpublished_seconds", labels),
        )

    relay = _relay(container, batch_size=10)
    relay.mark_interval = 3600.0
    await relay.start()
    try:
        sent = [f"gauge-sent-{i}" for i in range(3)]
        await _insert_rows(container, [_outbox_row(key, utcnow() - timedelta(hours=1)) for key in sent])
        assert [run.published for run in await relay.drain()] == [3]
        assert len(relay._unmarked) == 3
        relay._gauges_at = 0.0
        await relay._update_gauges(empty=False)
        assert gauges() == (0, 0)
        assert (await relay_status(container.db, outbox, runs=0)).backlog == 3

        waiting = [f"gauge-waiting-{i}" for i in range(2)]
        await _insert_rows(container, [_outbox_row(key) for key in waiting])
        relay._gauges_at = 0.0
        await relay._update_gauges(empty=False)
        backlog, oldest = gauges()
        assert backlog == 2
        # The rows sent an hour "ago" are left out of the age as well.
        assert oldest is not None and oldest < 1800
        status = await relay_status(container.db, outbox, runs=0, leaving_out=relay._unmarked)
        assert status.backlog == 2
        await relay.settle()
        assert await _unpublished(container, set(sent)) == set()
    finally:
        await relay.stop()


async def _insert_rows(container: Container, rows: list[dict[str, object]]) -> None:
    async with container.db.write_session() as session:
        await session.execute(insert(outbox.outbox), rows)
        await session.commit()


def _commit_to_publish() -> tuple[float, float]:
    labels = {"service": "order-intake"}
    count = REGISTRY.get_sample_value("casebridge_relay_commit_to_publish_seconds_count", labels)
    total = REGISTRY.get_sample_value("casebridge_relay_commit_to_publish_seconds_sum", labels)
    return count or 0.0, total or 0.0


async def test_the_read_takes_unpublished_rows_in_id_order_after_the_cursor_leaving_out_unmarked_ones(
    container: Container,
) -> None:
    """What the relay reads (SQLAlchemy on SQLite, asyncpg directly on PostgreSQL): the
    oldest unpublished rows by id, up to the batch size, after the given id, without
    the rows sent whose marking is still pending; the age in seconds since the epoch."""
    hour_ago = utcnow() - timedelta(hours=1)
    await _insert_rows(container, [_outbox_row(f"read-{i}", hour_ago) for i in range(8)])
    async with container.db.session() as s:
        ids = list((await s.execute(select(outbox.outbox.c.id).order_by(outbox.outbox.c.id))).scalars())
    await mark_published(container.db, outbox, outbox.outbox.c.id == ids[0])
    relay = _relay(container, batch_size=3)

    def keys(rows: list[Any]) -> list[str]:
        return [r.key for r in rows]

    assert keys(await relay._fetch()) == ["read-1", "read-2", "read-3"]
    assert keys(await relay._fetch(after=ids[3])) == ["read-4", "read-5", "read-6"]
    relay._unmarked.update({ids[2], ids[5]})
    assert keys(await relay._fetch()) == ["read-1", "read-3", "read-4"]
    assert keys(await relay._fetch(after=ids[3])) == ["read-4", "read-6", "read-7"]
    assert keys(await relay._fetch(after=ids[6])) == ["read-7"]
    row = (await relay._fetch(after=ids[6]))[0]
    assert (row.id, row.topic) == (ids[7], ORDERS_TOPIC)
    assert isinstance(row.payload, str) and row.payload.startswith("{")
    assert abs(row.created_at - hour_ago.timestamp()) < 1


async def test_each_key_goes_to_the_partition_kafkas_default_partitioner_picks(
    container: Container, broker: EmbeddedBroker
) -> None:
    """Record batches per partition must not move an order to another partition than
    a plain producer (or the Java client) would; the commit-to-publish metric is in seconds."""
    keys = [f"placed-{i}" for i in range(60)]
    two_hours_ago = utcnow() - timedelta(hours=2)
    await _insert_rows(container, [_outbox_row(k, two_hours_ago) for k in keys for _ in range(2)])
    count_before, sum_before = _commit_to_publish()
    relay = container.relay()
    await relay.start()
    try:
        run = await relay.publish_batch()
    finally:
        await relay.stop()
    assert (run.detected, run.published, run.failed) == (120, 120, 0)
    count_after, sum_after = _commit_to_publish()
    assert count_after - count_before == 120
    mean_age = (sum_after - sum_before) / 120
    assert 2 * 3600 <= mean_age < 3 * 3600  # seconds, not milliseconds or days

    async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
        await reader.read_until(lambda events: sum(e["partitionkey"] in keys for e in events) >= 120)
        all_partitions = sorted(reader.consumer.partitions_for_topic(ORDERS_TOPIC) or ())
    partition_of = DefaultPartitioner()
    seen = {(k, p) for k, p in zip(reader.keys, reader.partitions, strict=True) if k in keys}
    assert seen == {(k, partition_of(k.encode(), all_partitions, all_partitions)) for k in keys}


async def test_a_partition_refusing_its_batch_leaves_exactly_its_rows_unpublished(
    container: Container, broker: EmbeddedBroker
) -> None:
    keys = [f"refused-{i}" for i in range(40)]
    await _insert_rows(container, [_outbox_row(k) for k in keys for _ in range(2)])
    refused: list[int] = []

    def refusing_producer() -> AIOKafkaProducer:
        producer = make_producer(container.settings, client_id="test-refusing")
        send_batch = producer.send_batch

        async def refuse_one(batch: object, topic: str, *, partition: int) -> asyncio.Future[object]:
            if not refused or partition == refused[0]:
                refused[:1] = [partition]
                failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
                failed.set_exception(KafkaTimeoutError("no acknowledgement in time"))
                return failed
            return await send_batch(batch, topic, partition=partition)  # type: ignore[arg-type]

        producer.send_batch = refuse_one  # type: ignore[method-assign]
        return producer

    relay = _relay(container, producer_factory=refusing_producer)
    await relay.start()
    try:
        run = await relay.publish_batch()
    finally:
        await relay.stop()
    all_partitions = sorted(await _partitions(broker))
    partition_of = DefaultPartitioner()
    on_refused = {k for k in keys if partition_of(k.encode(), all_partitions, all_partitions) == refused[0]}
    assert on_refused and on_refused != set(keys)
    assert run.failed == 2 * len(on_refused) and run.published == 2 * (len(keys) - len(on_refused))
    assert run.error is not None and "KafkaTimeoutError" in run.error
    assert await _unpublished(container, set(keys)) == on_refused
    async with container.db.session() as s:
        rows = (
            await s.execute(
                select(
                    outbox.outbox.c.message_key, outbox.outbox.c.attempts, outbox.outbox.c.last_error
                ).where(outbox.outbox.c.message_key.in_(keys))
            )
        ).all()
    assert all(attempts == 1 for _, attempts, _ in rows)
    assert {key for key, _, error in rows if error} == on_refused


async def _partitions(broker: EmbeddedBroker) -> set[int]:
    async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
        return set(reader.consumer.partitions_for_topic(ORDERS_TOPIC) or ())


async def test_an_idle_relay_on_sqlite_watches_the_files_and_wakes_on_another_process_commit(
    container: Container, broker: EmbeddedBroker
) -> None:
    if container.db.dialect != "sqlite":
        pytest.skip("SQLite only: on PostgreSQL a NOTIFY in the committing transaction wakes the relay")
    # No safety-net query during the test: only the files can wake it.
    relay = _relay(container, poll_interval=0.001, idle_recheck=3600)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    engines = [container.db.engine.sync_engine, container.db._writer.sync_engine]
    for engine in engines:
        sqlalchemy_event.listen(engine, "before_cursor_execute", seen)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_until(lambda: _backlog_empty(container))
        await relay.settle()
        await wait_until(lambda: relay.idle_checks > 0)
        statements.clear()
        checks = relay.idle_checks
        await wait_until(lambda: relay.idle_checks >= checks + 50)
        assert statements == []  # fifty looks at the files while idle, not one query

        # Another process commits an event: its own connection to the file.
        database = make_url(container.db.url).database
        assert database is not None
        other = sqlite3.connect(database, isolation_level=None)
        row = _outbox_row("from-another-process")
        row["created_at"] = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores it
        other.execute(
            f"INSERT INTO outbox ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
        other.close()
        await wait_until(lambda: _none_unpublished(container, {"from-another-process"}), timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        for engine in engines:
            sqlalchemy_event.remove(engine, "before_cursor_execute", seen)


async def test_replay_republishes_from_a_point_in_time(
    factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    principal = _principal(customer.id)
    async with running_relay(container), TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
        for _ in range(3):
            async with container.uow() as uow:
                await orders.place_order(
                    uow, principal, OrderCreate(product_id=product.id, description="x"), None
                )
        await reader.read_until(lambda ev: len(ev) >= 3)
        # On the topic is not yet marked published (the marking trails the sending).
        await wait_until(lambda: _backlog_empty(container), message="the three marked published")
        queued = await mark_for_replay(container.db, outbox, utcnow() - timedelta(hours=1))
        assert queued >= 3
        events = await reader.read_until(lambda ev: len(ev) >= 6)
    counts = Counter(e["id"] for e in events if e["type"].endswith("order-placed.v1"))
    assert len(counts) == 3 and set(counts.values()) == {2}


async def test_published_rows_are_kept_for_the_retention_period_then_purged(
    factory: Factory, container: Container
) -> None:
    await factory.product()
    await factory.product(title="Second")
    async with container.db.session() as s:
        first_id = (
            (await s.execute(select(outbox.outbox.c.id).order_by(outbox.outbox.c.id))).scalars().first()
        )
    await mark_published(
        container.db, outbox, outbox.outbox.c.id == first_id, at=utcnow() - timedelta(days=8)
    )
    await mark_published(container.db, outbox, at=utcnow() - timedelta(days=1))
    await factory.product(title="Third")  # one more, still unpublished
    before = await _all_event_ids(container)
    removed = await purge_published(container.db, outbox, older_than=utcnow() - timedelta(days=7))
    assert removed == 1
    remaining = await _all_event_ids(container)
    assert len(remaining) == len(before) - 1 >= 2
    status = await relay_status(container.db, outbox)
    assert status.backlog == 1  # unpublished rows are never purged, however old


async def test_on_postgresql_the_commit_of_an_order_wakes_the_idle_relay(
    client: httpx.AsyncClient, factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    if container.db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: on SQLite the relay watches the database files (the test above)")
    # No safety-net query during the test: only the unit of work's NOTIFY can wake it.
    relay = _relay(container, poll_interval=3600, idle_recheck=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_until(lambda: _backlog_empty(container))
        customer, product = await factory.customer(), await factory.product()
        placed = await client.post(
            "/orders",
            json={"product_id": product.id, "description": "wake up"},
            headers=factory.auth(customer),
        )
        assert placed.status_code == 201
        await wait_until(lambda: _backlog_empty(container), timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
