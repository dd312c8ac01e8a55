"""The idempotent consumer against a real broker: once in effect, dead letters, outages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.db import Database, utcnow
from casebridge_shared.events import (
    CloudEvent,
    EventPayload,
    EventReader,
    binary_mode_attributes,
    published_by,
)
from casebridge_shared.inbox import (
    EventConsumer,
    dead_letter_topic,
    inbox_tables,
    list_dead_letters,
    replay_dead_letter,
)
from casebridge_shared.kafka import guarded_consumer, guarded_producer
from casebridge_shared.outbox import UnitOfWork, outbox_tables
from casebridge_shared.settings import ServiceSettings

TOPIC = "casebridge.test-things.v1"
metadata = MetaData()
OUTBOX = outbox_tables(metadata)
INBOX = inbox_tables(metadata)
THINGS = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
)
LABELS = Table(
    "labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("thing", Integer, ForeignKey("things.id"), nullable=False),
)


class ThingHappened(EventPayload):
    event_type = "casebridge.test.thing-happened.v1"
    topic: ClassVar[str] = TOPIC  # type: ignore[misc]
    name: str


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.scratch_database(tmp_path, "cbt_inbox") as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database


class Behaviour:
    """What the handler does: record the name, or fail on demand."""

    fail_times: ClassVar[dict[str, int]] = {}

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failures: dict[str, int] = {}
        self.database_down_for: int = 0

    async def handle(self, uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
        assert isinstance(payload, ThingHappened)
        self.calls.append(payload.name)
        if self.database_down_for > 0:
            self.database_down_for -= 1
            raise OperationalError("INSERT", {}, ConnectionRefusedError("database is down"))
        if payload.name.startswith("boom"):
            raise RuntimeError(f"handler bug for {payload.name}")
        await uow.session.execute(insert(THINGS).values(name=payload.name))


def make_consumer(
    db: Database, broker: EmbeddedBroker, behaviour: Behaviour, group: str = "things"
) -> EventConsumer:
    settings = ServiceSettings(environment="test", kafka_bootstrap_servers=broker.bootstrap_servers)
    return EventConsumer(
        db,
        OUTBOX,
        INBOX,
        settings,
        service="test",
        group=group,
        topics=[TOPIC],
        handlers={ThingHappened.event_type: behaviour.handle},
        sources=published_by("test", ThingHappened.event_type),
        source="/casebridge/test",
        max_attempts=3,
        retry_backoff=0.01,
        max_backoff=0.05,
    )


def event_bytes(
    name: str,
    *,
    type_: str = ThingHappened.event_type,
    data: dict[str, Any] | None = None,
    source: str = "/casebridge/test",
) -> bytes:
    event = CloudEvent(
        id=str(uuid.uuid4()),
        source=source,
        type=type_,
        time=utcnow(),
        partitionkey=name,
        aggregateversion=1,
        data=data if data is not None else {"name": name},
    )
    return event.to_bytes()


async def send(broker: EmbeddedBroker, *values: bytes, key: bytes = b"k") -> None:
    await testing.create_topics(broker.bootstrap_servers, TOPIC)
    producer = guarded_producer(broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TOPIC, value=value, key=key)
    finally:
        await producer.stop()


async def things(db: Database) -> list[str]:
    async with db.session() as s:
        return list((await s.execute(select(THINGS.c.name).order_by(THINGS.c.id))).scalars())


async def run_until(consumer: EventConsumer, condition: Any, timeout: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await testing.wait_until(condition, timeout=timeout, message="consumer progress")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_each_event_applied_once_even_when_redelivered(db: Database, broker: EmbeddedBroker) -> None:
    behaviour = Behaviour()
    first = [event_bytes(f"thing-{i}") for i in range(20)]
    await send(broker, *first)
    consumer = make_consumer(db, broker, behaviour)

    async def all_applied() -> bool:
        return len(await things(db)) == 20

    await run_until(consumer, all_applied)
    # Reset the group's offsets to the start of the topic, as an operator might.
    await testing.reset_group_offsets(broker.bootstrap_servers, "things", TOPIC)
    await send(broker, event_bytes("after-reset"))

    async def caught_up() -> bool:
        return "after-reset" in await things(db)

    await run_until(make_consumer(db, broker, behaviour), caught_up)
    names = await things(db)
    assert sorted(names) == sorted([f"thing-{i}" for i in range(20)] + ["after-reset"])
    assert behaviour.calls.count("thing-0") == 1  # the redelivered copy never reached the handler
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(INBOX.inbox))).scalar_one() == 21
    lags = [
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "casebridge_consumer_lag"
        for sample in metric.samples
        if sample.labels.get("group") == "things" and sample.labels.get("topic") == TOPIC
    ]
    assert lags and all(v == 0 for v in lags)  # caught up, per partition


async def test_poison_events_are_dead_lettered_and_the_partition_moves_on(
    db: Database, broker: EmbeddedBroker
) -> None:
    behaviour = Behaviour()
    poison = [
        b"{not json",
        json.dumps({"hello": "not a cloudevent"}).encode(),
        event_bytes("v2", type_="casebridge.test.thing-happened.v2"),
        event_bytes("bad-payload", data={"name": 42, "extra": True}),
        event_bytes("boom-1"),
    ]
    ignored = event_bytes("other", type_="casebridge.test.other-thing.v1")
    await send(broker, *poison, ignored, event_bytes("good-after"))
    consumer = make_consumer(db, broker, behaviour)

    async def good_applied() -> bool:
        return "good-after" in await things(db)

    await run_until(consumer, good_applied)
    letters = await list_dead_letters(db, INBOX, "things")
    errors = [row["error"] for row in letters]
    assert len(letters) == 5, errors
    assert errors[0].startswith("invalid JSON")
    assert errors[1].startswith("not a CloudEvent")
    assert "unknown version of casebridge.test.thing-happened" in errors[2]
    assert errors[3].startswith("payload does not match")
    assert "handler failed after 3 attempts" in errors[4] and "handler bug for boom-1" in errors[4]
    assert behaviour.calls.count("boom-1") == 3  # bounded retries, then given up
    assert await things(db) == ["good-after"]

    reader = guarded_consumer(
        dead_letter_topic("things"),
        bootstrap_servers=broker.bootstrap_servers,
        group_id="dlq-reader",
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        received: list[Any] = []

        async def five_letters() -> bool:
            for msgs in (await reader.getmany(timeout_ms=200)).values():
                received.extend(msgs)
            return len(received) >= 5

        await testing.wait_until(five_letters, timeout=30, message="dead letters on the topic")
    finally:
        await reader.stop()
    headers = dict(received[0].headers)
    assert headers["casebridge-dlq-origin-topic"] == TOPIC.encode()
    assert headers["casebridge-dlq-origin-offset"] == b"0"
    assert headers["casebridge-dlq-consumer-group"] == b"things"
    assert headers["casebridge-dlq-error"].startswith(b"invalid JSON")
    assert "casebridge-dlq-event-id" in dict(received[4].headers)
    assert received[0].value == b"{not json"


async def test_a_backlog_is_applied_in_runs_that_keep_order_around_a_failing_event(
    db: Database, broker: EmbeddedBroker
) -> None:
    behaviour = Behaviour()
    names = ["a-1", "a-2", "boom-x", "a-3", *(f"bulk-{i}" for i in range(300))]
    # One key: one partition, so the whole backlog arrives in order, in big batches.
    await send(broker, *(event_bytes(n) for n in names))
    consumer = make_consumer(db, broker, behaviour)

    async def drained() -> bool:
        return "bulk-299" in await things(db)

    await run_until(consumer, drained)
    good = [n for n in names if n != "boom-x"]
    assert await things(db) == good  # each once, in the partition's order
    letters = await list_dead_letters(db, INBOX, "things")
    assert [row["event_type"] for row in letters] == [ThingHappened.event_type]
    assert "handler bug for boom-x" in letters[0]["error"]
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(INBOX.inbox))).scalar_one() == len(good)
    # The run with boom-x was rolled back and the two before it applied again on their own;
    # boom-x itself was tried once in the run, then had its bounded retries.
    assert behaviour.calls.count("a-1") == 2
    assert behaviour.calls.count("boom-x") == 1 + 3


async def test_a_fetch_over_several_partitions_is_applied_in_runs_across_them(
    db: Database, broker: EmbeddedBroker
) -> None:
    keys = [f"key-{i}" for i in range(12)]  # spread over the topic's partitions
    names = {k: [f"{k}/{n}" for n in range(8)] for k in keys}
    names["key-3"][4] = "boom-key-3"  # one partition's run breaks in the middle
    transactions: dict[int, list[str]] = {}

    class Recording(Behaviour):
        async def handle(self, uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
            transactions.setdefault(id(uow), []).append(event.id)
            await super().handle(uow, event, payload)

    await testing.create_topics(broker.bootstrap_servers, TOPIC)
    producer = guarded_producer(broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for n in range(8):  # interleaved, as a steady stream of many orders arrives
            for k in keys:
                await producer.send_and_wait(TOPIC, value=event_bytes(names[k][n]), key=k.encode())
    finally:
        await producer.stop()
    consumer = make_consumer(db, broker, Recording())
    good = [n for k in keys for n in names[k] if not n.startswith("boom")]

    async def drained() -> bool:
        return len(await things(db)) == len(good)

    await run_until(consumer, drained)
    applied = await things(db)
    assert sorted(applied) == sorted(good)  # each once
    for k in keys:  # in each key's (partition's) order
        assert [n for n in applied if n.startswith(f"{k}/")] == [n for n in names[k] if n in good]
    async with db.session() as s:
        partition_of = dict((await s.execute(select(INBOX.inbox.c.event_id, INBOX.inbox.c.partition))).all())
    assert len(set(partition_of.values())) > 1
    # Runs take the fetch across partitions, not one partition each.
    assert any(len({partition_of.get(e) for e in ids} - {None}) > 1 for ids in transactions.values())
    assert [row["error"] for row in await list_dead_letters(db, INBOX, "things")] == [
        "handler failed after 3 attempts: RuntimeError: handler bug for boom-key-3"
    ]


async def test_a_database_outage_in_the_middle_of_a_run_loses_and_repeats_nothing(
    db: Database, broker: EmbeddedBroker
) -> None:
    behaviour = Behaviour()
    names = [f"run-{i}" for i in range(50)]
    await send(broker, *(event_bytes(n) for n in names))
    behaviour.database_down_for = 4
    consumer = make_consumer(db, broker, behaviour)

    async def drained() -> bool:
        return len(await things(db)) == len(names)

    await run_until(consumer, drained)
    assert await things(db) == names
    assert await list_dead_letters(db, INBOX) == []


async def test_a_database_outage_is_retried_never_dead_lettered(db: Database, broker: EmbeddedBroker) -> None:
    behaviour = Behaviour()
    behaviour.database_down_for = 8  # more failures than max_attempts: still not the event's fault
    await send(broker, event_bytes("patient"))
    consumer = make_consumer(db, broker, behaviour)

    async def applied() -> bool:
        return await things(db) == ["patient"]

    await run_until(consumer, applied)
    assert await list_dead_letters(db, INBOX) == []
    assert behaviour.calls.count("patient") == 9


async def test_dead_letter_replay_after_a_fix(db: Database, broker: EmbeddedBroker) -> None:
    behaviour = Behaviour()
    await send(broker, event_bytes("boom-fixable"), event_bytes("next"))
    consumer = make_consumer(db, broker, behaviour)

    async def next_applied() -> bool:
        return "next" in await things(db)

    await run_until(consumer, next_applied)
    [letter] = await list_dead_letters(db, INBOX, "things")

    failed_again = await replay_dead_letter(consumer, letter["id"])
    assert failed_again.dead_lettered
    [still] = await list_dead_letters(db, INBOX, "things")
    assert still["id"] == letter["id"] and "handler bug" in still["replay_error"]

    async def fixed(uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
        assert isinstance(payload, ThingHappened)
        await uow.session.execute(insert(THINGS).values(name=payload.name.replace("boom-", "")))

    consumer.handlers[ThingHappened.event_type] = fixed
    outcome = await replay_dead_letter(consumer, letter["id"])
    assert outcome.applied
    pending = await list_dead_letters(db, INBOX, "things")
    assert pending == []
    [done] = await list_dead_letters(db, INBOX, "things", pending_only=False)
    assert done["replayed_at"] is not None and done["replay_error"] is None
    assert sorted(await things(db)) == ["fixable", "next"]
    assert (await replay_dead_letter(consumer, letter["id"])).duplicate  # idempotent


class ThingReader(EventReader):
    """Another service's view of ThingHappened: only what it uses, tolerant of the rest."""

    name: str


def record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TOPIC,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=(),
    )


async def test_an_event_type_is_accepted_only_from_the_source_that_owns_it(
    db: Database, broker: EmbeddedBroker
) -> None:
    behaviour = Behaviour()
    consumer = make_consumer(db, broker, behaviour)  # thing-happened: only /casebridge/test
    forged = event_bytes("forged", source="/casebridge/notifier")
    records = [record(event_bytes("before"), 0), record(forged, 1), record(event_bytes("after"), 2)]
    position = 0
    while position < len(records):  # as the loop does: runs, the forged one on its own
        position += await consumer.process_many(records[position:])
    assert await things(db) == ["before", "after"]
    assert "forged" not in behaviour.calls  # never reached the handler
    [letter] = await list_dead_letters(db, INBOX, "things")
    assert letter["offset"] == 1 and letter["attempts"] == 1
    assert letter["error"] == (
        "event type casebridge.test.thing-happened.v1 from source /casebridge/notifier; "
        "only /casebridge/test may publish it"
    )

    # A handled type nobody was declared the owner of is refused from every source.
    settings = ServiceSettings(environment="test", kafka_bootstrap_servers=broker.bootstrap_servers)
    unowned = EventConsumer(
        db,
        OUTBOX,
        INBOX,
        settings,
        service="test",
        group="unowned",
        topics=[TOPIC],
        handlers={ThingHappened.event_type: behaviour.handle},
        source="/casebridge/test",
    )
    outcome = await unowned.process(record(event_bytes("no-owner"), 3))
    assert outcome.dead_lettered and outcome.error is not None
    assert outcome.error.endswith("from source /casebridge/test; no source is trusted for it here")
    assert "no-owner" not in behaviour.calls


async def test_a_consumer_reads_another_service_s_events_through_its_own_reader_model(
    db: Database, broker: EmbeddedBroker
) -> None:
    seen: list[ThingReader] = []

    async def handle(uow: UnitOfWork, event: CloudEvent, payload: ThingReader) -> None:
        seen.append(payload)
        await uow.session.execute(insert(THINGS).values(name=payload.name))

    settings = ServiceSettings(environment="test", kafka_bootstrap_servers=broker.bootstrap_servers)
    unregistered = "casebridge.test.elsewhere.v1"  # no EventPayload registered for it
    consumer = EventConsumer(
        db,
        OUTBOX,
        INBOX,
        settings,
        service="test",
        group="readers",
        topics=[TOPIC],
        handlers={unregistered: handle, "casebridge.test.no-model.v1": handle},
        sources=published_by("test", unregistered, "casebridge.test.no-model.v1"),
        source="/casebridge/test",
        payload_models={unregistered: ThingReader},
        max_attempts=2,
        retry_backoff=0.01,
    )
    await send(
        broker,
        event_bytes("x", type_="casebridge.test.no-model.v1"),
        event_bytes("n", type_=unregistered, data={"name": "with-extra", "added_later": [1, 2]}),
    )

    async def applied() -> bool:
        return await things(db) == ["with-extra"]

    await run_until(consumer, applied)
    assert seen == [ThingReader(name="with-extra")]
    [letter] = await list_dead_letters(db, INBOX, "readers")
    assert letter["error"] == "no payload model for casebridge.test.no-model.v1"
    assert letter["attempts"] == 1  # a missing model is the event's problem: never retried


async def send_with_headers(
    broker: EmbeddedBroker, *records: tuple[bytes, bytes, list[tuple[str, bytes]]]
) -> None:
    """``(key, value, headers)`` records, as a producer that is not ours would send them."""
    await testing.create_topics(broker.bootstrap_servers, TOPIC)
    producer = guarded_producer(broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(TOPIC, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def binary_mode(
    name: str, *, data: dict[str, Any] | None = None, **attributes: str
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A binary-mode CloudEvent record by the Kafka protocol binding (no cloudevents SDK in our dependencies).

    Attributes are ``ce_`` headers, ``datacontenttype`` the ``content-type`` header,
    ``data`` the value; no ``ce_partitionkey``: the key is the partition key.
    """
    headers = {
        "ce_specversion": "1.0",
        "ce_id": str(uuid.uuid4()),
        "ce_source": "/casebridge/test",
        "ce_type": ThingHappened.event_type,
        "ce_time": "2026-12-07T10:00:00Z",
        "ce_aggregateversion": "1",
        "content-type": "application/json; charset=utf-8",
    } | {f"ce_{k}": v for k, v in attributes.items()}
    value = json.dumps(data if data is not None else {"name": name}).encode()
    return name.encode(), value, [(k, v.encode()) for k, v in headers.items() if v]


async def test_binary_mode_cloudevents_are_read_like_structured_ones(
    db: Database, broker: EmbeddedBroker
) -> None:
    behaviour = Behaviour()
    seen: list[CloudEvent] = []

    async def handle(uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
        seen.append(event)
        await behaviour.handle(uow, event, payload)

    consumer = make_consumer(db, broker, behaviour)
    consumer.handlers[ThingHappened.event_type] = handle
    traced = binary_mode("binary-1", traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    added = binary_mode("binary-2", data={"name": "binary-2", "added_later": {"nested": True}})
    structured = (
        b"structured",
        event_bytes("structured"),
        [("content-type", b"application/cloudevents+json")],
    )
    await send_with_headers(broker, traced, added, structured)

    async def applied() -> bool:
        return len(await things(db)) == 3

    await run_until(consumer, applied)
    assert sorted(await things(db)) == ["binary-1", "binary-2", "structured"]  # keys: three partitions
    assert await list_dead_letters(db, INBOX, "things") == []
    [first] = [event for event in seen if event.partitionkey == "binary-1"]
    assert first.id == dict(traced[2])["ce_id"].decode()
    assert first.partitionkey == "binary-1"  # from the record key
    assert first.datacontenttype == "application/json"
    assert first.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert first.data == {"name": "binary-1"}

    # The binding's rule: a cloudevents content type is structured mode, whatever else is there.
    assert binary_mode_attributes([("content-type", b"application/cloudevents+json")], b"k") is None
    assert (
        binary_mode_attributes(
            [("ce_specversion", b"1.0"), ("Content-Type", b"application/cloudevents+json; charset=utf-8")],
            b"k",
        )
        is None
    )
    assert binary_mode_attributes([("ce_specversion", b"1.0"), ("ce_data", b"x")], b"k") == {
        "specversion": "1.0",
        "partitionkey": "k",
    }

    # The same event again in binary mode is a duplicate, as in structured mode.
    outcome = await consumer.process(
        ConsumerRecord(
            topic=TOPIC,
            partition=0,
            offset=99,
            timestamp=0,
            timestamp_type=0,
            key=traced[0],
            value=traced[1],
            checksum=None,
            serialized_key_size=8,
            serialized_value_size=len(traced[1]),
            headers=traced[2],
        )
    )
    assert outcome.duplicate


async def test_dead_letters_keep_every_original_header(db: Database, broker: EmbeddedBroker) -> None:
    behaviour = Behaviour()
    no_version = binary_mode("no-version", aggregateversion="")
    bad_json = (b"bad-json", b"{nope", binary_mode("bad-json")[2])
    not_json = binary_mode("xml")
    not_json = (
        not_json[0],
        b"<thing/>",
        [(k, b"application/xml" if k == "content-type" else v) for k, v in not_json[2]],
    )
    own_headers = [
        ("content-type", b"application/cloudevents+json"),
        ("x-integrator", b"batch-7"),
        ("x-integrator", b"second value, same name"),
    ]
    structured_poison = (b"k", event_bytes("boom-headers"), own_headers)
    # One key, so one partition: the dead letters come in the order sent.
    records = [no_version, bad_json, not_json, structured_poison, binary_mode("after")]
    await send_with_headers(broker, *((b"k", value, headers) for _, value, headers in records))
    consumer = make_consumer(db, broker, behaviour)

    async def after_applied() -> bool:
        return "after" in await things(db)

    await run_until(consumer, after_applied)
    errors = [row["error"] for row in await list_dead_letters(db, INBOX, "things")]
    assert len(errors) == 4, errors
    assert errors[0].startswith("not a CloudEvent (binary mode): aggregateversion")
    assert errors[1].startswith("invalid JSON in the data of a binary-mode CloudEvent")
    assert errors[2] == "binary-mode CloudEvent with data of type application/xml; only JSON is read"
    assert "handler bug for boom-headers" in errors[3]

    reader = guarded_consumer(
        dead_letter_topic("things"),
        bootstrap_servers=broker.bootstrap_servers,
        group_id="dlq-headers",
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        received: list[Any] = []

        async def four_letters() -> bool:
            for msgs in (await reader.getmany(timeout_ms=200)).values():
                received.extend(msgs)
            return len(received) >= 4

        await testing.wait_until(four_letters, timeout=30, message="dead letters on the topic")
    finally:
        await reader.stop()
    for letter, (_, value, original) in zip(
        received, [no_version, bad_json, not_json, structured_poison], strict=True
    ):
        headers = list(letter.headers)
        assert headers[: len(original)] == original  # every original header, in order, first
        added = dict(headers[len(original) :])
        assert added["casebridge-dlq-origin-topic"] == TOPIC.encode()
        assert added["casebridge-dlq-consumer-group"] == b"things"
        assert added["casebridge-dlq-error"]
        assert (letter.key, letter.value) == (b"k", value)
    assert dict(received[3].headers)["casebridge-dlq-attempts"] == b"3"


async def test_a_binary_mode_dead_letter_is_replayed_with_its_headers(
    db: Database, broker: EmbeddedBroker
) -> None:
    behaviour = Behaviour()
    consumer = make_consumer(db, broker, behaviour)
    key, value, headers = binary_mode("boom-binary")
    headers.append(("x-empty", None))  # type: ignore[arg-type]  # Kafka allows a header without a value
    incoming = ConsumerRecord(
        topic=TOPIC,
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=headers,
    )
    assert (await consumer.process(incoming)).dead_lettered
    [letter] = await list_dead_letters(db, INBOX, "things")
    assert letter["event_id"] == dict(headers)["ce_id"].decode()
    assert letter["message_headers"][0] == ["ce_specversion", "MS4w"]  # base64 of b"1.0"
    assert letter["message_headers"][-1] == ["x-empty", None]

    async def fixed(uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
        assert isinstance(payload, ThingHappened)
        await uow.session.execute(insert(THINGS).values(name=payload.name.replace("boom-", "")))

    consumer.handlers[ThingHappened.event_type] = fixed
    assert (await replay_dead_letter(consumer, letter["id"])).applied  # read as binary mode again
    assert await things(db) == ["binary"]
    assert await list_dead_letters(db, INBOX, "things") == []


async def test_rows_inserted_at_commit_are_written_with_the_events_or_not_at_all(db: Database) -> None:
    async def outbox_rows() -> int:
        async with db.session() as s:
            return int((await s.execute(select(func.count()).select_from(OUTBOX.outbox))).scalar_one())

    async with UnitOfWork(db, OUTBOX, "/casebridge/test") as uow:
        uow.insert_at_commit(THINGS, {"name": "first"}, {"name": "second"})
        uow.insert_at_commit(THINGS, {"name": "third"})
        uow.emit(ThingHappened(name="first"), key="first", version=1)
        assert await things(db) == [] and await outbox_rows() == 0  # nothing before the commit
        await uow.commit()
    assert await things(db) == ["first", "second", "third"]  # in the order given
    assert await outbox_rows() == 1

    async with UnitOfWork(db, OUTBOX, "/casebridge/test") as uow:
        uow.insert_at_commit(THINGS, {"name": "dropped"})
        uow.emit(ThingHappened(name="dropped"), key="dropped", version=1)
        await uow.rollback()
        uow.insert_at_commit(THINGS, {"name": "kept"})
        await uow.commit()  # what was queued before the rollback is gone with it
    assert await things(db) == ["first", "second", "third", "kept"]
    assert await outbox_rows() == 1

    async with UnitOfWork(db, OUTBOX, "/casebridge/test") as uow:
        uow.insert_at_commit(THINGS)  # no rows: nothing written (not a row of defaults)
        await uow.commit()
    assert await things(db) == ["first", "second", "third", "kept"]


async def test_rows_queued_for_a_table_go_in_one_statement_tables_in_the_order_first_queued(
    db: Database,
) -> None:
    statements: list[tuple[str, int]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith("INSERT INTO things") or statement.startswith("INSERT INTO labels"):
            statements.append((statement.split()[2], len(parameters) if many else 1))

    # Every engine: the database's writes go through a writer engine of their own on SQLite.
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        async with UnitOfWork(db, OUTBOX, "/casebridge/test") as uow:
            # Alternating, as a handler writes a thing and then its label, event after event.
            for n in range(1, 4):
                uow.insert_at_commit(THINGS, {"id": n, "name": f"thing-{n}"})
                uow.insert_at_commit(LABELS, {"thing": n})  # refers to a row queued before it
            await uow.commit()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert statements == [("things", 3), ("labels", 3)]
    assert await things(db) == ["thing-1", "thing-2", "thing-3"]


async def test_a_queued_row_can_be_withdrawn_before_the_commit(db: Database) -> None:
    first, second, third = {"name": "first"}, {"name": "second"}, {"name": "third"}
    async with UnitOfWork(db, OUTBOX, "/casebridge/test") as uow:
        uow.insert_at_commit(THINGS, first, second, third)
        assert uow.withdraw(THINGS, second) is True
        assert uow.withdraw(THINGS, second) is False  # already taken back
        assert uow.withdraw(THINGS, {"name": "first"}) is False  # an equal dict is not the queued one
        assert uow.withdraw(LABELS, first) is False  # not queued for that table
        await uow.commit()
    assert await things(db) == ["first", "third"]


async def test_before_run_sees_each_run_s_new_events_once_before_its_handlers(
    db: Database, broker: EmbeddedBroker
) -> None:
    announced: list[tuple[int, list[str]]] = []
    handled: list[tuple[int, str]] = []
    runs = iter(range(1_000_000))

    async def before_run(uow: UnitOfWork, run: Any) -> None:
        number = next(runs)
        uow.session.info["test.run"] = number
        announced.append((number, [payload.name for _, payload in run]))

    class Recording(Behaviour):
        async def handle(self, uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
            assert isinstance(payload, ThingHappened)
            handled.append((uow.session.info["test.run"], payload.name))
            await super().handle(uow, event, payload)

    twice = event_bytes("sent-twice")
    names = [f"thing-{i}" for i in range(40)]
    await send(
        broker, *(event_bytes(n) for n in names[:20]), twice, twice, *(event_bytes(n) for n in names[20:])
    )
    consumer = make_consumer(db, broker, Recording())
    consumer.before_run = before_run

    async def drained() -> bool:
        return len(await things(db)) == len(names) + 1

    await run_until(consumer, drained)
    assert sorted(await things(db)) == sorted([*names, "sent-twice"])  # each once
    for number, announced_names in announced:  # each run: exactly the events its handlers applied
        assert announced_names == [name for run, name in handled if run == number]
    assert sum(names_.count("sent-twice") for _, names_ in announced) == 1
