"""Idempotent consumers: the inbox, dead letters, and the consume loop.

Each event's effect and its id are committed in one database transaction
(the inbox), and the Kafka offset is committed only after that. A redelivered
event finds its id in the inbox and has no second effect; a crash between the
database commit and the offset commit only causes such a redelivery.

What a consumer cannot handle goes to its dead-letter topic (and a
``dead_letters`` row, since the embedded broker keeps nothing on disk) with
headers naming where it came from and why, after bounded retries where the
error may be transient; the partition then moves on. A database outage is
not the event's fault: it is retried until the database is back, never
dead-lettered, never skipped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from casebridge_shared import metrics
from casebridge_shared.db import Database, UTCDateTime, is_transient_database_error, utcnow
from casebridge_shared.events import CloudEvent, binary_mode_attributes, is_json_media_type, read_payload
from casebridge_shared.kafka import (
    BrokerClient,
    TopicMisconfigured,
    broker_client,
    check_topics,
    current_cluster,
    ensure_topics,
    make_consumer,
    make_producer,
)
from casebridge_shared.logs import describe_error
from casebridge_shared.outbox import OutboxRelay, OutboxTables, UnitOfWork
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.tracing import record_context, span_from

log = structlog.get_logger(__name__)
_ID = BigInteger().with_variant(Integer, "sqlite")
_VERSIONED_TYPE = re.compile(r"^(?P<base>.+)\.v(?P<version>\d+)$")


@dataclass(frozen=True)
class InboxTables:
    inbox: Table
    dead_letters: Table


def inbox_tables(metadata: MetaData) -> InboxTables:
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer_group", String(200), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("event_type", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("processed_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("consumer_group", "event_id", name="pk_inbox"),
        Index("ix_inbox_processed_at", "processed_at"),
    )
    dead_letters = Table(
        "dead_letters",
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("consumer_group", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("event_id", String(64), nullable=True),
        Column("event_type", String(200), nullable=True),
        Column("message_key", LargeBinary, nullable=True),
        Column("message_value", LargeBinary, nullable=True),
        # The record's headers, ``[[name, base64 value or null], ...]`` in their order: a
        # binary-mode event's attributes are there, so a replay needs them.
        Column("message_headers", JSON, nullable=True),
        Column("error", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("replayed_at", UTCDateTime, nullable=True),
        Column("replay_error", Text, nullable=True),
        Index("ix_dead_letters_group", "consumer_group", "id"),
    )
    return InboxTables(inbox=inbox, dead_letters=dead_letters)


class _Stopped(Exception):
    """Shutdown asked for while waiting on the database: leave the offset uncommitted."""


class BrokerReset(Exception):
    """The broker is not the one this consumer read from: its committed offsets are gone with it."""


class PoisonEvent(Exception):
    """The event itself is wrong (bad JSON, bad schema, unknown version): never retry."""


# The payload is the consumer's own reader model for the type (see ``payload_models``)
# or, for events of the consuming service's own contract, the registered EventPayload.
Handler = Callable[[UnitOfWork, CloudEvent, Any], Awaitable[None]]
# Called once per run (one applied alone too), before its handlers, with the run's new events and their
# payloads: a service loads in one query what its handlers would each look up.
BeforeRun = Callable[[UnitOfWork, Sequence[tuple[CloudEvent, Any]]], Awaitable[None]]


def dead_letter_topic(group: str) -> str:
    return f"casebridge.dlq.{group}"


async def check_worker_topics(
    settings: ServiceSettings,
    stop: asyncio.Event,
    *,
    relays: Sequence[OutboxRelay] = (),
    consumers: Sequence[EventConsumer] = (),
) -> None:
    """Before a worker starts its loops, with ``kafka_topic_creation=never``: its topics are as provisioned.

    Every topic it reads or dead-letters to exists, and those its relays publish to
    have ``kafka_topic_partitions`` partitions. Otherwise
    :class:`~casebridge_shared.kafka.TopicMisconfigured` is raised here and the worker
    refuses to start (``run_service_worker``), rather than retrying for ever. A broker
    that is not reachable yet is waited for (until ``stop``). With ``auto`` the relays
    and consumers create what is missing themselves, as they start.
    """
    if settings.kafka_topic_creation == "auto":
        return
    backoff = 0.5
    while not stop.is_set():
        try:
            await check_topics(
                settings,
                publishes=[topic for relay in relays for topic in relay.topics],
                consumes=[
                    topic
                    for consumer in consumers
                    for topic in (*consumer.topics, dead_letter_topic(consumer.group))
                ],
            )
            return
        except TopicMisconfigured:
            raise
        except (KafkaError, OSError) as exc:
            log.warning("worker.topic_check_waiting", error=f"{type(exc).__name__}: {exc}"[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, 5.0)


@dataclass(frozen=True)
class _Prepared:
    record: ConsumerRecord[bytes, bytes]
    event: CloudEvent
    handler: Handler
    payload: BaseModel


@dataclass
class Outcome:
    applied: bool = False
    duplicate: bool = False
    ignored: bool = False
    dead_lettered: bool = False
    error: str | None = None


class EventConsumer:
    """Consumes topics into a service's database, exactly once in effect."""

    def __init__(
        self,
        db: Database,
        outbox: OutboxTables,
        tables: InboxTables,
        settings: ServiceSettings,
        *,
        service: str,
        group: str,
        topics: Sequence[str],
        handlers: dict[str, Handler],
        source: str,
        max_attempts: int | None = None,
        retry_backoff: float = 0.2,
        max_backoff: float = 10.0,
        batch_size: int = 500,
        payload_models: Mapping[str, type[BaseModel]] | None = None,
        before_run: BeforeRun | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.tables = tables
        self.settings = settings
        self.service = service
        self.group = group
        self.topics = list(topics)
        self.handlers = handlers
        self.source = source
        self.max_attempts = max_attempts if max_attempts is not None else settings.consumer_max_attempts
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        # A service reads another service's events through its own reader models
        # (tolerant of fields it does not know) instead of importing that
        # service's code: deployables stay independent.
        self.payload_models = dict(payload_models or {})
        self.before_run = before_run
        # Which source may publish each handled type (``published_by``): an event of
        # that type from any other source is dead-lettered, never applied. A type
        # without an owner here is refused for every source (deny unless allowed).
        self.sources = dict(sources or {})
        self._known_bases = {
            m.group("base"): int(m.group("version"))
            for t in handlers
            if (m := _VERSIONED_TYPE.match(t)) is not None
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._positions: dict[TopicPartition, int] = {}
        # The broker this consumer reads from (its cluster id), and the client's count of
        # connections when that was last confirmed (see ``_confirm_broker``).
        self._cluster_id: str | None = None
        self._confirmed_at_connection = 0

    # -- classification --------------------------------------------------

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> CloudEvent:
        if record.value is None:
            raise PoisonEvent("empty message (tombstone) on an event topic")
        attributes = binary_mode_attributes(record.headers or (), record.key)
        if attributes is not None:
            return _decode_binary(attributes, record.value)
        try:
            # Parsed and validated in one pass by pydantic's own JSON parser: less
            # CPU than json.loads and then validating the dict (see ADR-0017).
            return CloudEvent.model_validate_json(record.value)
        except ValidationError as exc:
            if any(error["type"] == "json_invalid" for error in exc.errors()):
                raise PoisonEvent(f"invalid JSON: {_short(exc)}") from exc
            raise PoisonEvent(f"not a CloudEvent: {_short(exc)}") from exc

    def _handler_for(self, event: CloudEvent) -> Handler | None:
        handler = self.handlers.get(event.type)
        if handler is not None:
            owner = self.sources.get(event.type)
            if event.source != owner:
                only = f"only {owner} may publish it" if owner else "no source is trusted for it here"
                raise PoisonEvent(f"event type {event.type} from source {event.source}; {only}")
            return handler
        match = _VERSIONED_TYPE.match(event.type)
        if match and match.group("base") in self._known_bases:
            raise PoisonEvent(
                f"unknown version of {match.group('base')}: v{match.group('version')} "
                f"(this consumer handles v{self._known_bases[match.group('base')]})"
            )
        return None  # an event type this consumer has no business with

    def _payload(self, event: CloudEvent) -> BaseModel:
        model = self.payload_models.get(event.type)
        if model is not None:
            return read_payload(model, event.data)
        try:
            return event.payload()
        except LookupError as exc:
            raise PoisonEvent(f"no payload model for {event.type}") from exc

    def _span(self, record: ConsumerRecord[bytes, bytes], event: CloudEvent) -> AbstractContextManager[Any]:
        """The consumer span a handler runs in: a child of the span that emitted the event (the
        record's ``traceparent`` header, else the event's attribute), so the events the handler
        emits, its log lines and its deliveries continue the producer's trace."""
        return span_from(
            f"process {event.type}",
            record_context(record.headers or (), event.traceparent, event.tracestate),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self.group,
                "messaging.message.id": event.id,
                "cloudevents.event_type": event.type,
                "cloudevents.event_source": event.source,
                "casebridge.service": self.service,
            },
        )

    # -- processing --------------------------------------------------------

    async def process(
        self, record: ConsumerRecord[bytes, bytes], stop: asyncio.Event | None = None
    ) -> Outcome:
        """Apply one record: retry transient faults, dead-letter what cannot be applied."""
        attempt = 0
        event: CloudEvent | None = None
        while True:
            attempt += 1
            try:
                event = self._decode(record)
                handler = self._handler_for(event)
                if handler is None:
                    return Outcome(ignored=True)
                try:
                    payload = self._payload(event)
                except ValidationError as exc:
                    raise PoisonEvent(f"payload does not match {event.type}: {_short(exc)}") from exc
                return await self._apply(record, event, handler, payload)
            except PoisonEvent as exc:
                await self._dead_letter(record, event, str(exc), attempt)
                return Outcome(dead_lettered=True, error=str(exc))
            except Exception as exc:
                if is_transient_database_error(exc):
                    # Not the event's fault: wait for the database, never skip.
                    delay = min(self.retry_backoff * 2 ** min(attempt, 8), self.max_backoff)
                    log.warning(
                        "consumer.database_unavailable",
                        group=self.group,
                        error=describe_error(exc),
                        retry_in=delay,
                    )
                    await _sleep_unless_stopped(delay, stop)
                    attempt = 0
                    continue
                if attempt >= self.max_attempts and not await self._database_reachable():
                    # An outage in a form not recognised above: still not the event's fault.
                    log.warning("consumer.database_unreachable", group=self.group, error=describe_error(exc))
                    await _sleep_unless_stopped(self.max_backoff, stop)
                    attempt = 0
                    continue
                if attempt >= self.max_attempts:
                    # Never the event's values (they are in the dead letter): describe_error.
                    error = f"handler failed after {attempt} attempts: {describe_error(exc, 2000)}"
                    log.error("consumer.giving_up", group=self.group, error=error[:500])
                    await self._dead_letter(record, event, error, attempt)
                    return Outcome(dead_lettered=True, error=error)
                delay = min(self.retry_backoff * 2 ** (attempt - 1), self.max_backoff)
                log.warning("consumer.retrying", group=self.group, attempt=attempt, error=describe_error(exc))
                await _sleep_unless_stopped(delay, stop)

    async def _database_reachable(self) -> bool:
        """Asked before an event is dead-lettered: never because the database was away."""
        try:
            await self.db.ping()
        except Exception:
            return False
        return True

    # -- batches -------------------------------------------------------------

    def _prepared(self, record: ConsumerRecord[bytes, bytes]) -> _Prepared | None:
        """The record ready to apply, or None if it needs the one-by-one path (poison, ignored)."""
        try:
            event = self._decode(record)
            handler = self._handler_for(event)
            if handler is None:
                return None
            return _Prepared(record, event, handler, self._payload(event))
        except (PoisonEvent, ValidationError):
            return None

    async def process_many(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], stop: asyncio.Event | None = None
    ) -> int:
        """Apply a run of records; returns how many were dealt with (>= 1).

        ``records`` may come from several partitions, each partition's in its
        order (the caller lays a fetch out partition after partition); a prefix
        of the list is then a prefix of every partition's records, which is what
        the offsets committed afterwards say. Events of one key share a
        partition, so nothing orders records of different partitions.

        The leading records that decode and validate are applied in one
        transaction (one inbox insert, one commit) instead of one each, which is
        what makes a backlog drain quickly. Order is kept: the run stops before
        the first record that is poison or ignored, and if a handler fails the
        transaction is rolled back and the records before the failing one are
        applied again on their own; the failing one then takes the one-by-one
        path with its retries and dead-lettering.
        """
        run: list[_Prepared] = []
        for record in records[: self.batch_size]:
            prepared = self._prepared(record)
            if prepared is None:
                break
            run.append(prepared)
        end = len(run)
        while end > 1:
            failed_at = await self._apply_run(run[:end])
            if failed_at is None:
                if end < len(run):
                    # The record at ``end`` is the one whose handler failed: now
                    # its own retries, and the dead-letter topic if they run out.
                    await self.process(records[end], stop)
                    return end + 1
                return end
            end = failed_at
        await self.process(records[0], stop)
        return 1

    async def _apply_run(self, run: list[_Prepared]) -> int | None:
        """Apply ``run`` in one transaction; None on success, else how many before it failed.

        Everything is rolled back on any failure. A handler's own error names
        its record, so the records before it can go again as a shorter run; a
        database error (or a failing commit) names none, and the caller goes one
        by one, where outages are waited out.
        """
        inbox = self.tables.inbox
        current: int | None = None
        try:
            async with UnitOfWork(
                self.db, self.outbox, self.source, schema_base=self.settings.event_schema_base_url
            ) as uow:
                # The run's inbox rows go in first, skipping the ids this group has
                # applied already; what comes back is the run's new events. Unlike a
                # SELECT of the ids, the insert's duplicate checks are probes of the
                # primary key whatever the planner believes: a look-up by
                # (consumer_group, event_id IN ...) was planned as a scan of the
                # group's rows on a table without statistics yet, slower as the table
                # grew (see ADR-0017). An event twice in one fetch is one
                # row; a concurrent copy of the run waits for this one's row and is
                # then skipped. Rolled back with everything else on failure.
                first: dict[str, tuple[int, _Prepared]] = {}
                for index, item in enumerate(run):
                    first.setdefault(item.event.id, (index, item))
                now = utcnow()
                claimed = await uow.session.execute(
                    _claim_in_inbox(inbox, self.db.dialect),
                    [
                        {
                            "consumer_group": self.group,
                            "event_id": item.event.id,
                            "event_type": item.event.type,
                            "topic": item.record.topic,
                            "partition": item.record.partition,
                            "offset": item.record.offset,
                            "processed_at": now,
                        }
                        for _, item in first.values()
                    ],
                )
                fresh = {row[0] for row in claimed}
                new = [(index, item) for index, item in first.values() if item.event.id in fresh]
                if self.before_run is not None and new:
                    await self.before_run(uow, [(item.event, item.payload) for _, item in new])
                for index, item in new:
                    current = index
                    with self._span(item.record, item.event):
                        await item.handler(uow, item.event, item.payload)
                    current = None
                await uow.commit()
        except Exception as exc:
            error = describe_error(exc, 200)
            log.info("consumer.run_rolled_back", group=self.group, size=len(run), error=error)
            if current is None or is_transient_database_error(exc):
                return 0
            return current
        metrics.CONSUMER_APPLIED.labels(self.service, self.group).inc(len(new))
        self._observe_age(*(item.event for _, item in new))
        return None

    async def _apply(
        self, record: ConsumerRecord[bytes, bytes], event: CloudEvent, handler: Handler, payload: BaseModel
    ) -> Outcome:
        inbox = self.tables.inbox
        async with UnitOfWork(
            self.db, self.outbox, self.source, schema_base=self.settings.event_schema_base_url
        ) as uow:
            seen = await uow.session.execute(
                select(inbox.c.event_id).where(
                    inbox.c.consumer_group == self.group, inbox.c.event_id == event.id
                )
            )
            if seen.first() is not None:
                return Outcome(duplicate=True)
            if self.before_run is not None:  # a run of one
                await self.before_run(uow, [(event, payload)])
            with self._span(record, event):
                await handler(uow, event, payload)
            uow.insert_at_commit(
                inbox,
                {
                    "consumer_group": self.group,
                    "event_id": event.id,
                    "event_type": event.type,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "processed_at": utcnow(),
                },
            )
            await uow.commit()
        metrics.CONSUMER_APPLIED.labels(self.service, self.group).inc()
        self._observe_age(event)
        return Outcome(applied=True)

    def _observe_age(self, *events: CloudEvent) -> None:
        """How late each applied event is here: the path's latency hop by hop (the alerts use it)."""
        if not events:
            return
        age = metrics.EVENT_AGE_AT_APPLY_SECONDS.labels(self.service, self.group)
        now = utcnow()
        for event in events:
            # A producer's clock a little ahead must not make a negative age.
            age.observe(max(0.0, (now - _aware(event.time)).total_seconds()))

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], event: CloudEvent | None, error: str, attempts: int
    ) -> None:
        # Every header the record came with (binary-mode CloudEvent attributes, trace
        # context, an integrator's own), then ours: the copy on the dead-letter topic
        # is the original record plus why it is there.
        headers = [
            *(record.headers or ()),
            ("casebridge-dlq-origin-topic", record.topic.encode()),
            ("casebridge-dlq-origin-partition", str(record.partition).encode()),
            ("casebridge-dlq-origin-offset", str(record.offset).encode()),
            ("casebridge-dlq-consumer-group", self.group.encode()),
            ("casebridge-dlq-error", error[:2000].encode()),
            ("casebridge-dlq-attempts", str(attempts).encode()),
        ]
        if event is not None:
            headers.append(("casebridge-dlq-event-id", event.id.encode()))
        # The row first: it survives a broker without storage; the topic is for integrators.
        dead = self.tables.dead_letters
        while True:
            try:
                async with self.db.write_session() as session:
                    already = await session.execute(
                        select(dead.c.id).where(
                            dead.c.consumer_group == self.group,
                            dead.c.topic == record.topic,
                            dead.c.partition == record.partition,
                            dead.c.offset == record.offset,
                            dead.c.replayed_at.is_(None),
                        )
                    )
                    if already.first() is not None:
                        break  # dead-lettered before a crash; only the topic copy may be missing
                    await session.execute(
                        insert(self.tables.dead_letters).values(
                            consumer_group=self.group,
                            topic=record.topic,
                            partition=record.partition,
                            offset=record.offset,
                            event_id=event.id if event else None,
                            event_type=event.type if event else None,
                            message_key=record.key,
                            message_value=record.value,
                            message_headers=_stored_headers(record.headers or ()),
                            error=error,
                            attempts=attempts,
                            created_at=utcnow(),
                        )
                    )
                    await session.commit()
                break
            except Exception as exc:
                if not is_transient_database_error(exc):
                    raise
                await asyncio.sleep(self.max_backoff / 4)
        if self._dlq is not None:
            await self._dlq.send_and_wait(
                dead_letter_topic(self.group), value=record.value, key=record.key, headers=headers
            )
        metrics.DEAD_LETTERED.labels(self.service, self.group).inc()
        log.warning(
            "consumer.dead_lettered",
            group=self.group,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=event.id if event else None,
            error=error[:500],
        )

    # -- the loop -------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.settings, [*self.topics, dead_letter_topic(self.group)])
        self._dlq = make_producer(self.settings, client_id=f"{self.service}-dlq")
        await self._dlq.start()
        self._consumer = make_consumer(
            self.settings,
            *self.topics,
            group_id=self.group,
            client_id=f"{self.service}-{self.group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            isolation_level="read_committed",
        )
        await self._consumer.start()
        client = broker_client(self._consumer)
        await current_cluster(client)
        self._cluster_id = client.cluster_id
        self._confirmed_at_connection = client.connections_opened

    async def _confirm_broker(self, client: BrokerClient) -> None:
        """Raise :class:`BrokerReset` if records may come from a broker that is not the one we started on.

        A restarted broker that kept nothing has none of this group's committed offsets,
        while the consumer still fetches from the positions it had: in the new logs those
        point at other events, or past the end. Records only come over a connection, so
        the cluster id is asked again whenever the client opened a new one: at most once
        per reconnection, not once per fetch.
        """
        if client.connections_opened == self._confirmed_at_connection:
            return
        self._confirmed_at_connection = client.connections_opened
        previous = self._cluster_id
        await current_cluster(client)
        if previous and client.cluster_id and client.cluster_id != previous:
            raise BrokerReset(
                f"the broker's cluster id changed from {previous} to {client.cluster_id}: its committed "
                "offsets are gone; reading every topic again from the start, skipping the events "
                "already applied"
            )

    async def stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None
        if self._dlq is not None:
            with contextlib.suppress(Exception):
                await self._dlq.stop()
            self._dlq = None

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                await self.start()
                log.info("consumer.started", group=self.group, topics=self.topics)
                backoff = 0.5
                await self._loop(stop)
            except BrokerReset as exc:
                metrics.BROKER_RESETS.labels(self.service, f"consumer {self.group}").inc()
                log.warning("consumer.broker_reset", group=self.group, message=str(exc))
                backoff = 0.5
            except Exception as exc:  # broker trouble: reconnect; offsets keep our place
                log.warning(
                    "consumer.restarting", group=self.group, error=f"{type(exc).__name__}: {exc}"[:500]
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                await self.stop()

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        client = broker_client(consumer)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=self.batch_size)
            await self._confirm_broker(client)
            # The whole fetch in runs across partitions, not a run per partition: a
            # steady stream spreads over every partition, a few events each per
            # fetch, and a run's fixed cost (its transaction, the look-ups its
            # handlers remember for it) was paid for every one of those few.
            records = [record for partition_records in batches.values() for record in partition_records]
            offsets: dict[TopicPartition, int] = {}
            position = 0
            while position < len(records) and not stop.is_set():
                try:
                    taken = await self.process_many(records[position:], stop)
                except _Stopped:
                    break
                for record in records[position : position + taken]:
                    offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
                position += taken
            if offsets:
                # After the database commits of these effects, in one request for every
                # partition of the fetch (one broker round trip, not one per partition).
                # A crash before this line redelivers them and the inbox turns them
                # into no-ops.
                await consumer.commit(offsets)
                self._positions.update(offsets)
            self._record_lag(consumer)

    def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = self._positions.get(tp)
            if highwater is None or position is None:
                continue
            metrics.CONSUMER_LAG.labels(self.service, self.group, tp.topic, str(tp.partition)).set(
                max(0, highwater - position)
            )


@functools.cache
def _claim_in_inbox(inbox: Table, dialect: str) -> ReturningInsert[tuple[str]]:
    """Insert a run's inbox rows, skipping ids already there; returns the ids inserted."""
    statement = sqlite.insert(inbox) if dialect == "sqlite" else postgresql.insert(inbox)
    return statement.on_conflict_do_nothing(index_elements=["consumer_group", "event_id"]).returning(
        inbox.c.event_id
    )


async def list_dead_letters(
    db: Database, tables: InboxTables, group: str | None = None, *, pending_only: bool = True
) -> list[dict[str, Any]]:
    """Dead letters, oldest first; by default only those not yet successfully replayed."""
    query = select(tables.dead_letters).order_by(tables.dead_letters.c.id)
    if pending_only:
        query = query.where(tables.dead_letters.c.replayed_at.is_(None))
    if group:
        query = query.where(tables.dead_letters.c.consumer_group == group)
    async with db.session() as session:
        return [dict(r) for r in (await session.execute(query)).mappings()]


async def replay_dead_letter(consumer: EventConsumer, dead_letter_id: int) -> Outcome:
    """Apply a stored dead letter again (after a fix). Idempotent through the inbox."""
    dead = consumer.tables.dead_letters
    async with consumer.db.session() as session:
        row = (await session.execute(select(dead).where(dead.c.id == dead_letter_id))).mappings().first()
    if row is None:
        raise LookupError(f"no dead letter {dead_letter_id}")
    record = ConsumerRecord(
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        timestamp=0,
        timestamp_type=0,
        key=row["message_key"],
        value=row["message_value"],
        checksum=None,
        serialized_key_size=len(row["message_key"] or b""),
        serialized_value_size=len(row["message_value"] or b""),
        headers=_loaded_headers(row["message_headers"]),
    )
    outcome = await consumer.process(record)
    async with consumer.db.write_session() as session:
        # Still failing: it stays a pending dead letter, with the latest error.
        values: dict[str, Any] = (
            {"replay_error": outcome.error}
            if outcome.dead_lettered
            else {"replayed_at": utcnow(), "replay_error": None}
        )
        await session.execute(update(dead).where(dead.c.id == dead_letter_id).values(**values))
        await session.commit()
    return outcome


async def _sleep_unless_stopped(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    if stop.is_set():
        raise _Stopped


def _stored_headers(headers: Sequence[tuple[str, bytes | None]]) -> list[list[str | None]]:
    """Kafka headers as JSON: values are bytes (base64), names repeat, order matters."""
    return [[name, None if value is None else base64.b64encode(value).decode()] for name, value in headers]


def _loaded_headers(stored: list[list[str | None]] | None) -> tuple[tuple[str, bytes | None], ...]:
    """The headers ``_stored_headers`` kept; none for a dead letter from before they were kept."""
    return tuple(
        (str(name), None if value is None else base64.b64decode(value)) for name, value in stored or ()
    )


def _decode_binary(attributes: dict[str, Any], value: bytes) -> CloudEvent:
    """A binary-mode record (CloudEvents Kafka binding): attributes from headers, ``data`` the value."""
    content_type = attributes.get("datacontenttype", "application/json")
    if not is_json_media_type(content_type):
        raise PoisonEvent(f"binary-mode CloudEvent with data of type {content_type}; only JSON is read")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoisonEvent(f"invalid JSON in the data of a binary-mode CloudEvent: {exc}") from exc
    try:
        return CloudEvent.model_validate({**attributes, "data": data})
    except ValidationError as exc:
        raise PoisonEvent(f"not a CloudEvent (binary mode): {_short(exc)}") from exc


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def _aware(at: datetime) -> datetime:
    """A CloudEvents time without an offset is UTC (ours always carry one)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
