"""Transactional outbox and the relay that publishes it to Kafka.

A state change and the event describing it are written in one transaction
(:class:`UnitOfWork`). The relay reads the outbox in id order, sends the rows
with ``acks=all``, and moves them out afterwards: a relay killed at
any point may publish a row again, but never skips one. Consumers dedupe by
event id.

Only one relay per database publishes at a time so per-key order holds. The
lock is one the operating system or database drops when the holder dies
(``flock`` next to the SQLite file, a PostgreSQL session advisory lock), so a
SIGKILLed relay is replaced at once, with no lease to wait out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import re
import socket
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared import health, metrics
from casebridge_shared.broker_watch import BrokerWatch
from casebridge_shared.db import (
    Database,
    DatabaseFiles,
    FileSignature,
    UTCDateTime,
    insert_into,
    new_id,
    notify_at_commit,
    utcnow,
)
from casebridge_shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    DEFAULT_DATASCHEMA_BASE,
    CloudEvent,
    EventPayload,
    dataschema_uri,
)
from casebridge_shared.kafka import BrokerClient, TopicMisconfigured, ensure_topics, make_producer
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.sqlite_dbapi import sent_with_commit
from casebridge_shared.tracing import current_trace_headers, kafka_trace_headers
from casebridge_shared.worker import until_any

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "casebridge_outbox"
_ID = BigInteger().with_variant(Integer, "sqlite")


@dataclass(frozen=True)
class OutboxTables:
    outbox: Table
    published: Table
    relay_runs: Table
    relay_offsets: Table


MESSAGE_KEY_MAX = 200
"""The longest partition key the outbox holds (``message_key``)."""


def _event_columns() -> list[Column[Any]]:
    """What the outbox and ``outbox_published`` both hold of an event, after the id."""
    return [
        Column("event_id", String(36), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("message_key", String(MESSAGE_KEY_MAX), nullable=False),
        Column("event_type", String(200), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", Text, nullable=True),
    ]


def outbox_tables(metadata: MetaData) -> OutboxTables:
    """The outbox, the events it published, and the relay's job log, in a service's own metadata.

    ``outbox`` holds only what waits to be published; the relay moves each row it
    published into ``outbox_published`` (kept for the retention period, for replay
    and inspection). Marking a row published by an update wrote a new version of
    the whole row and an entry in each of the outbox's indexes (an indexed
    ``published_at`` rules out PostgreSQL's in-place update), and on PostgreSQL
    that marking, fighting the relay's reads for the cores, kept the relay at
    0.7-0.8 of a raw producer's rate; a move writes the row once into a table
    with one index and leaves the outbox's indexes alone. With only pending rows
    in it, the outbox needs no index on publication state.
    """
    outbox = Table(
        "outbox",
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        *_event_columns(),
        UniqueConstraint("event_id"),
        # SQLite would hand an emptied outbox's next row the id of one already
        # published (max + 1); AUTOINCREMENT never reuses an id.
        sqlite_autoincrement=True,
    )
    published = Table(
        "outbox_published",
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=False),
        *_event_columns(),
        Column("published_at", UTCDateTime, nullable=False),
        Index("ix_outbox_published_published_at", "published_at"),
    )
    relay_runs = Table(
        "relay_runs",
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("relay", String(200), nullable=False),
        Column("started_at", UTCDateTime, nullable=False),
        Column("finished_at", UTCDateTime, nullable=False),
        Column("detected", Integer, nullable=False),
        Column("published", Integer, nullable=False),
        Column("failed", Integer, nullable=False),
        Column("error", Text, nullable=True),
        Index("ix_relay_runs_started_at", "started_at"),
    )
    # Per partition we published to: the offset of a record the broker acknowledged
    # (the first of our last batch there) and which broker (cluster id) did; how the
    # relay tells that the broker lost what it had (casebridge_shared.broker_watch).
    relay_offsets = Table(
        "relay_offsets",
        metadata,
        Column("topic", String(200), primary_key=True),
        Column("partition", Integer, primary_key=True, autoincrement=False),
        Column("cluster_id", String(200), nullable=True),
        Column("acknowledged_offset", BigInteger, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    return OutboxTables(
        outbox=outbox, published=published, relay_runs=relay_runs, relay_offsets=relay_offsets
    )


async def move_rows(
    session: AsyncSession,
    dialect: str,
    source: Table,
    target: Table,
    where: ColumnElement[bool],
    computed: dict[str, Callable[[Any], ColumnElement[Any]]],
) -> int:
    """Move the rows of ``source`` matching ``where`` into ``target``, in the session's transaction.

    Columns of ``target`` missing from ``source`` (or to be changed on the way)
    come from ``computed``, each given the moved row's columns. On PostgreSQL
    one statement deletes and inserts the very same rows; a delete by the same
    condition after the insert could, under read committed, remove a row that
    committed between the two statements without having copied it. SQLite runs
    one writer at a time, so two statements in the write transaction are safe.
    """
    names = [c.name for c in target.columns]
    if dialect == "postgresql":
        moved = (
            delete(source).where(where).returning(*(source.c[n] for n in names if n in source.c)).cte("moved")
        )
        rows = select(*(computed[n](moved.c) if n in computed else moved.c[n] for n in names))
        result = await session.execute(insert(target).from_select(names, rows))
        return int(getattr(result, "rowcount", 0) or 0)
    rows = select(*(computed[n](source.c) if n in computed else source.c[n] for n in names)).where(where)
    await session.execute(insert(target).from_select(names, rows))
    result = await session.execute(delete(source).where(where))
    return int(getattr(result, "rowcount", 0) or 0)


class UnitOfWork:
    """One write transaction: state changes plus the events they cause.

    ``emit`` queues an event; ``commit`` writes the queued events into the
    outbox and commits everything together (cosmicpython's unit of work).
    """

    def __init__(
        self,
        db: Database,
        tables: OutboxTables,
        source: str,
        *,
        schema_base: str = DEFAULT_DATASCHEMA_BASE,
    ) -> None:
        self._db = db
        self._tables = tables
        self._source = source
        # ``dataschema`` of each event: the base (``event_schema_base_url``) plus its type.
        self._schema_base = schema_base
        self._events: list[CloudEvent] = []
        self._rows: dict[Table, list[dict[str, Any]]] = {}
        self._session_cm: Any = None
        self.session: AsyncSession

    async def __aenter__(self) -> Self:
        self._session_cm = self._db.write_session()
        self.session = await self._session_cm.__aenter__()
        self._events = []
        self._rows = {}
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.session.in_transaction():
                await self.session.rollback()
        finally:
            await self._session_cm.__aexit__(exc_type, exc, tb)

    def emit(
        self, payload: EventPayload, *, key: str, version: int, subject: str | None = None
    ) -> CloudEvent:
        if len(key) > MESSAGE_KEY_MAX:
            # PostgreSQL would refuse it at commit, SQLite would not: fail the same on both.
            raise ValueError(f"event key of {len(key)} characters; the outbox holds {MESSAGE_KEY_MAX}")
        # The span this runs in (a request's, or the consumer's span for the event being
        # applied): the outbox row keeps it, and whoever consumes the event continues it.
        trace_context = current_trace_headers()
        event = CloudEvent(
            id=new_id(),
            source=self._source,
            type=payload.event_type,
            dataschema=dataschema_uri(payload.event_type, self._schema_base),
            subject=subject or key,
            time=utcnow(),
            partitionkey=key,
            aggregateversion=version,
            traceparent=trace_context.get("traceparent"),
            tracestate=trace_context.get("tracestate"),
            data=payload.model_dump(mode="json"),
        )
        self._events.append(event)
        return event

    def insert_at_commit(self, table: Table, *rows: dict[str, Any]) -> None:
        """Rows this unit of work creates and does not read back, written at commit.

        Core inserts, after the flush of the session's ORM objects and before the
        events: no ORM object per row, and no trip of their own into SQLAlchemy's
        greenlet and to the database. A table's rows are written together, in the
        order queued, one statement for all of them; tables go in the order their
        first row was queued, so a row may refer to rows of tables queued before
        its own (a case's first timeline entry after the case), and to anything
        flushed. No rows, nothing written.
        """
        if rows:
            self._rows.setdefault(table, []).extend(rows)

    def withdraw(self, table: Table, row: dict[str, Any]) -> bool:
        """Take back a row queued by ``insert_at_commit`` (that very dict); False if it is not queued.

        For a row the same transaction turns out to need after all: the caller
        adds it as an ORM object instead, and the flush writes it first.
        """
        queued = self._rows.get(table, [])
        for index, candidate in enumerate(queued):
            if candidate is row:
                del queued[index]
                return True
        return False

    @property
    def pending_events(self) -> Sequence[CloudEvent]:
        return tuple(self._events)

    async def commit(self) -> None:
        now = utcnow()
        rows = [
            {
                "event_id": e.id,
                "topic": EventPayload.registry[e.type].topic,
                "message_key": e.partitionkey,
                "event_type": e.type,
                "payload": e.to_bytes().decode(),
                "created_at": now,
            }
            for e in self._events
        ]
        if rows:
            # PostgreSQL: delivered at commit, so the relay wakes once the rows are visible.
            notify_at_commit(self.session, NOTIFY_CHANNEL)
        # One trip into SQLAlchemy's greenlet for the flush, the outbox rows and
        # the commit, rather than one each: every such switch costs about as much
        # CPU as a short statement.
        await self.session.run_sync(self._write_and_commit, rows)
        self._events = []
        self._rows = {}

    def _write_and_commit(self, session: Session, rows: list[dict[str, Any]]) -> None:
        session.flush()  # the state's own rows (ORM objects added), then its events
        if not (self._rows or rows):
            session.commit()
            return
        connection = session.connection()
        # SQLite: the queued rows, the events and the COMMIT in one trip to the
        # database thread, so the file's write lock is not held across loop turns.
        with sent_with_commit(connection):
            for table, values in self._rows.items():
                if values:
                    connection.execute(insert_into(table), values)
            if rows:
                connection.execute(insert_into(self._tables.outbox), rows)
            session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()
        self._events = []
        self._rows = {}


@dataclass
class RelayRun:
    started_at: datetime
    detected: int = 0
    published: int = 0
    failed: int = 0
    error: str | None = None


def id_in(tables: OutboxTables, dialect: str, ids: list[int] | None = None) -> ColumnElement[bool]:
    """``outbox.id IN ids`` as one bound parameter, so the statement compiles once.

    An expanding ``IN (?, ?, ...)`` of a thousand ids is rendered afresh for
    every batch and was the relay's largest cost after the broker itself.
    ``ids`` None: the list is bound when the statement runs (``ids``: the list
    on PostgreSQL, its JSON text on SQLite).
    """
    outbox_id = tables.outbox.c.id
    if dialect == "postgresql":
        return outbox_id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
    text_ids = None if ids is None else json.dumps(ids)
    each = func.json_each(bindparam("ids", text_ids, type_=String)).table_valued("value")
    return outbox_id.in_(select(each.c.value))


@dataclass
class RelayStatus:
    backlog: int
    oldest_unpublished_age_seconds: float | None
    last_runs: list[dict[str, Any]] = field(default_factory=list)


async def relay_status(
    db: Database, tables: OutboxTables, *, runs: int = 20, leaving_out: Collection[int] = ()
) -> RelayStatus:
    """The outbox's backlog, its oldest row's age and the relay's last runs.

    ``leaving_out``: ids of rows the caller knows are on the broker already but not yet
    marked published (the relay's own pending marks), so they do not count as backlog.
    """
    outbox = tables.outbox
    backlog_query = select(func.count(), func.min(outbox.c.created_at))
    if leaving_out:
        # Copied (sorted) before the first await: the relay adds to its set meanwhile.
        backlog_query = backlog_query.where(~id_in(tables, db.dialect, sorted(leaving_out)))
    async with db.session() as session:
        row = (await session.execute(backlog_query)).one()
        recent = (
            await session.execute(
                select(tables.relay_runs).order_by(tables.relay_runs.c.id.desc()).limit(runs)
            )
        ).mappings()
        last_runs = [dict(r) for r in recent]
    backlog, oldest = int(row[0]), row[1]
    if oldest is not None and oldest.tzinfo is None:
        from datetime import UTC

        oldest = oldest.replace(tzinfo=UTC)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else None
    return RelayStatus(backlog=backlog, oldest_unpublished_age_seconds=age, last_runs=last_runs)


async def mark_for_replay(db: Database, tables: OutboxTables, since: datetime) -> int:
    """Queue every published event created since ``since`` to be published again.

    The events move back into the outbox with their ids, so the relay's next
    full scan sends them in their original order.
    """
    published = tables.published
    async with db.write_session() as session:
        queued = await move_rows(
            session, db.dialect, published, tables.outbox, published.c.created_at >= since, computed={}
        )
        notify_at_commit(session, NOTIFY_CHANNEL)
        await session.commit()
    return queued


class RelayLock:
    """Only one relay per database; released by the OS/database if we die."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._fd: int | None = None
        self._pg: asyncpg.Connection | None = None
        self.wakeup = asyncio.Event()

    async def try_acquire(self) -> bool:
        if self._db.dialect == "sqlite":
            db_path = make_url(self._db.url).database or "casebridge.sqlite3"
            lock_path = Path(db_path).with_name(Path(db_path).name + ".relay.lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True
        conn: asyncpg.Connection = await asyncpg.connect(self._db.asyncpg_dsn(), timeout=10)
        key = zlib.crc32(b"casebridge-outbox-relay")
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        if not got:
            await conn.close()
            return False

        def _on_notify(*_args: Any) -> None:
            self.wakeup.set()

        await conn.add_listener(NOTIFY_CHANNEL, _on_notify)
        self._pg = conn
        return True

    def is_healthy(self) -> bool:
        if self._pg is not None:
            return not self._pg.is_closed()
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None
        if self._pg is not None:
            with contextlib.suppress(Exception):
                await self._pg.close()
            self._pg = None


_HEADERS = [("content-type", CLOUDEVENTS_CONTENT_TYPE.encode())]
# The top-level trace attributes of an outbox row's CloudEvent JSON (``CloudEvent.to_bytes``).
# Its attributes before ``data`` are all scalars, and inside a JSON string a quote is
# escaped, so ``[{,]"name":`` ahead of the first ``,"data":`` is a top-level key.
_TRACE_ATTRIBUTE = re.compile(r'[{,]"(traceparent|tracestate)":"([^"\\]*)"')
_DATA_KEY = ',"data":'


def _record_headers(payload: str) -> list[tuple[str, bytes]]:
    """The Kafka headers of an outbox row: content type and the event's trace context.

    The trace context is read from the stored event rather than a column of its own: no
    outbox migration in every service, and a scan of the JSON's first few hundred
    characters instead of parsing all of it for two strings.
    """
    end = payload.find(_DATA_KEY)
    found: dict[str, str] = {
        m.group(1): m.group(2)
        for m in _TRACE_ATTRIBUTE.finditer(payload, 0, end if end >= 0 else len(payload))
    }
    if not found:
        return _HEADERS
    return [*_HEADERS, *kafka_trace_headers(found.get("traceparent"), found.get("tracestate"))]


# The default partitioner's hash of a key (aiokafka's DefaultPartitioner, Kafka's own).
_key_hash = functools.lru_cache(maxsize=65_536)(murmur2)


@dataclass
class _Batch:
    """One record batch on its way to a partition, and the outbox rows in it."""

    topic: str
    partition: int
    builder: BatchBuilder
    rows: list[_Row] = field(default_factory=list)

    def add(self, row: _Row, key: bytes) -> bool:
        """Append the row; False if the batch is full."""
        added = self.builder.append(
            key=key, value=row.payload.encode(), timestamp=None, headers=_record_headers(row.payload)
        )
        if added is None:
            return False
        self.rows.append(row)
        return True


@dataclass
class _Row:
    id: int
    topic: str
    key: str
    payload: str
    created_at: float  # seconds since the epoch


class OutboxRelay:
    """Publishes a service's outbox to Kafka (the CDC-style sync unit, A4)."""

    def __init__(
        self,
        db: Database,
        tables: OutboxTables,
        settings: ServiceSettings,
        *,
        service: str,
        topics: Sequence[str],
        batch_size: int = 1000,
        poll_interval: float = 0.02,
        idle_recheck: float = 1.0,
        retention: timedelta = timedelta(days=7),
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self.db = db
        self.tables = tables
        self.settings = settings
        self.service = service
        self.topics = list(topics)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.idle_recheck = idle_recheck
        self.idle_checks = 0  # looks at the SQLite files while idle (a test reads it)
        self.retention = retention
        self.name = f"{service}@{socket.gethostname()}:{os.getpid()}"
        self._producer_factory = producer_factory or (
            lambda: make_producer(settings, client_id=f"{service}-relay")
        )
        self._producer: AIOKafkaProducer | None = None
        self._lock = RelayLock(db)
        self._last_purge = utcnow()
        self._gauges_at = 0.0
        # Rows acknowledged by the broker not yet moved out of the outbox,
        # the runs waiting to be marked, and the task marking them (see ``drain``).
        self._unmarked: set[int] = set()
        self._to_mark: list[tuple[RelayRun, list[_Row]]] = []
        self._marking: asyncio.Task[None] | None = None
        # Set to mark what waits without waiting out the interval (``settle``, a full pile).
        self._mark_now = asyncio.Event()
        self._sqlite_reads: dict[tuple[bool, bool], Select[Any]] = {}
        self.mark_interval = settings.relay_mark_interval_seconds
        # What the broker acknowledged, to tell when it lost it (broker_watch), and the
        # reason an acknowledgement just showed that it did, healed after the drain.
        self.watch = BrokerWatch(
            db, tables.relay_offsets, topics=self.topics, partitions=settings.kafka_topic_partitions
        )
        self.check_interval = settings.relay_broker_check_seconds
        self._next_check = 0.0
        self._reset: str | None = None
        self._made: set[str] = set()  # topics made (or found as configured) since the start

    async def _make_topics(self, topics: Sequence[str]) -> None:
        await ensure_topics(self.settings, topics, check_partitions=topics)
        self._made.update(topics)

    async def start(self) -> None:
        self._made.clear()
        await self._make_topics(self.topics)
        self._producer = self._producer_factory()
        await self._producer.start()
        await self.check_broker()

    def _broker_client(self) -> BrokerClient | None:
        client = self._producer.client if self._producer is not None else None
        # A producer a test made by hand may not be ours; it is then not checked.
        return client if isinstance(client, BrokerClient) else None

    async def check_broker(self) -> None:
        """Ask the broker whether it still has what it acknowledged; heal if it does not."""
        self._next_check = time.monotonic() + self.check_interval
        client = self._broker_client()
        if client is None:
            return
        reason = await self.watch.check(client)
        if reason is not None:
            await self._heal(reason)

    async def _heal(self, reason: str) -> None:
        """The broker lost acknowledged events: every retained published event goes out again.

        They move back into the outbox with their ids, so the next drains send them
        first and in their original order; the consumers drop the ones they had
        applied. Rows acknowledged by the new broker before we noticed go again too.
        """
        self._reset = None
        with contextlib.suppress(Exception):  # a failed marking leaves its rows to be sent again
            await self.settle()
        async with self.db.write_session() as session:
            queued = await move_rows(
                session, self.db.dialect, self.tables.published, self.tables.outbox, true(), computed={}
            )
            await self.watch.clear(session)
            notify_at_commit(session, NOTIFY_CHANNEL)
            await session.commit()
        self.watch.forget()
        self._made.clear()
        await self._make_topics(self.topics)
        metrics.BROKER_RESETS.labels(self.service, "relay").inc()
        metrics.RELAY_REPUBLISHED.labels(self.service).inc(queued)
        log.warning(
            "relay.broker_reset",
            relay=self.name,
            reason=reason,
            requeued=queued,
            message=(
                f"The Kafka broker lost events it had acknowledged ({reason}); "
                f"the {queued} retained published events of {self.service} go out again."
            ),
        )
        await self._record_note(f"broker reset: {reason}; {queued} retained events queued again", queued)

    async def stop(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire the relay lock, then publish until ``stop`` is set; ride out every fault."""
        backoff = 0.2
        while not stop.is_set():
            try:
                acquired = await self._lock.try_acquire()
            except Exception as exc:  # the database is away: the lock is, too
                log.warning("relay.lock_unavailable", error=str(exc)[:300], error_type=type(exc).__name__)
                await until_any(stop, timeout=backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not acquired:
                await until_any(stop, timeout=1.0)
                continue
            log.info("relay.started", relay=self.name)
            try:
                await self._publish_loop(stop)
                backoff = 0.2
            except TopicMisconfigured as exc:
                # Not healed by waiting: say so everywhere an operator looks, and look again.
                metrics.RELAY_HALTED.labels(self.service).set(1)
                health.WORKER.problem(f"relay {self.service}", str(exc))
                log.error("relay.halted", relay=self.name, reason=str(exc))
                await self._record_failed_run(exc)
                await until_any(stop, timeout=self.check_interval)
            except Exception as exc:  # any other failure: back off and start over, never skip
                log.warning("relay.restarting", error=str(exc), error_type=type(exc).__name__)
                await self._record_failed_run(exc)
                await until_any(stop, timeout=backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                await self.stop()
                await self._lock.release()

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        await self.start()
        metrics.RELAY_HALTED.labels(self.service).set(0)
        health.WORKER.clear(f"relay {self.service}")
        try:
            await self._publish_until(stop)
        finally:
            # A failed marking is logged by settle; its rows are sent again next time.
            with contextlib.suppress(Exception):
                await self.settle()

    async def _publish_until(self, stop: asyncio.Event) -> None:
        files = DatabaseFiles.of(self.db)
        while not stop.is_set():
            if not self._lock.is_healthy():
                raise RuntimeError("relay lock connection lost")
            self._raise_if_marking_failed()
            if time.monotonic() >= self._next_check:
                await self.check_broker()
            # Taken before the read, so a commit landing during the drain wakes the next one.
            self._lock.wakeup.clear()
            seen = files.signature() if files is not None else None
            runs = await self.drain()
            if self._reset is not None:
                await self._heal(self._reset)
                continue
            failed = next((r for r in runs if r.error is not None), None)
            if failed is not None:
                raise RuntimeError(failed.error)
            await self._maybe_purge()
            if runs and runs[-1].detected >= self.batch_size:
                continue  # cut short by the drain's time bound: more is waiting, no sleep
            if files is not None and seen is not None:
                await self._wait_for_a_commit(stop, files, seen)
                continue
            # PostgreSQL: NOTIFY wakes us, the timeout is the safety net.
            timeout = self.idle_recheck if self.db.dialect == "postgresql" else self.poll_interval
            await until_any(stop, self._lock.wakeup, timeout=timeout)

    async def _wait_for_a_commit(
        self, stop: asyncio.Event, files: DatabaseFiles, seen: FileSignature
    ) -> None:
        """SQLite: wait until the database's files change, or ``idle_recheck`` passed.

        A commit, by any process, writes the write-ahead log. Looking at the two
        files' size and time every ``poll_interval`` costs a few microseconds where
        a query cost a millisecond or more: an idle relay polling by query took a
        share of a core in each worker (see ADR-0004). The recheck by query is the safety net
        for a change the file times cannot show (two writes within one clock tick
        leaving the log the same size).
        """
        deadline = time.monotonic() + self.idle_recheck
        while not stop.is_set() and time.monotonic() < deadline:
            await until_any(stop, timeout=self.poll_interval)
            self.idle_checks += 1
            if files.signature() != seen:
                return

    async def publish_batch(self) -> RelayRun:
        """Publish up to ``batch_size`` unpublished rows; record the run if it did anything."""
        await self.settle()
        rows = await self._fetch()
        if not rows:
            await self._update_gauges(empty=True)
            return RelayRun(started_at=utcnow())
        run, published, failed = await self._send(rows)
        await self._finish(run, published, failed)
        return run

    async def drain(self, max_seconds: float = 1.0) -> list[RelayRun]:
        """Publish batch after batch until the outbox is empty (or ``max_seconds`` passed).

        Batch N+1 is only sent once every row of batch N was acknowledged, so a
        failure stops the drain exactly as ``publish_batch`` would (per-key order
        kept). Marking acknowledged rows published trails behind, in a task of its
        own (what piled up is marked in one transaction): the next batch is fetched and sent
        without waiting for the database's write lock, which on SQLite another
        process (the api placing orders into the same file) may hold for a long
        while. Rows sent but not marked yet are left out of every fetch. Each
        drain starts with a full scan, which picks up any row that committed late
        with a lower id (PostgreSQL sequences), hence the time bound.
        """
        runs: list[RelayRun] = []
        fetching: asyncio.Task[list[_Row]] | None = asyncio.ensure_future(self._fetch())
        deadline = time.monotonic() + max_seconds
        try:
            while fetching is not None:
                rows = await fetching
                fetching = None
                if not rows:
                    if not runs and not self._unmarked:
                        await self._update_gauges(empty=True)
                    if not runs:
                        runs.append(RelayRun(started_at=utcnow()))
                    break
                if len(rows) >= self.batch_size and time.monotonic() < deadline:
                    # Read the next batch while this one is on its way to the broker.
                    fetching = asyncio.ensure_future(self._fetch(after=rows[-1].id))
                run, published, failed = await self._send(rows)
                runs.append(run)
                if failed:
                    # Settle what is pending first, so the failure is recorded last.
                    await self.settle()
                    await self._finish(run, published, failed)
                    break
                self._mark_later(run, published)
                if self._reset is not None:
                    break  # the broker lost what it had: heal before sending more
        finally:
            if fetching is not None:
                await fetching
        return runs

    def _mark_later(self, run: RelayRun, published: list[_Row]) -> None:
        self._unmarked.update(row.id for row in published)
        self._to_mark.append((run, published))
        if len(self._unmarked) >= self.batch_size:
            self._mark_now.set()
        marking = self._marking
        if marking is None or (marking.done() and not marking.cancelled() and marking.exception() is None):
            # A failed marking stays in place until ``_raise_if_marking_failed`` or
            # ``settle`` reports it; nothing more is marked after it.
            self._marking = asyncio.ensure_future(self._mark_waiting())

    async def _mark_waiting(self) -> None:
        """Mark every waiting run published, all that piled up in one write transaction.

        While one marking waits for the write lock (or the disk), later batches
        pile up and are marked together: one transaction for many batches keeps
        marking ahead of publishing, where a transaction per batch fell behind.
        It first lets them pile up for ``mark_interval``: under a steady trickle
        (an order every few milliseconds) each batch held one or two rows, and
        its marking was the relay's largest cost and one more writer queueing
        for the file the api writes orders to (see ADR-0003).
        """
        while self._to_mark:
            if self.mark_interval > 0:
                await until_any(self._mark_now, timeout=self.mark_interval)
            self._mark_now.clear()
            runs, self._to_mark = self._to_mark, []
            await self._record([(run, published, []) for run, published in runs])
            for run, published in runs:
                self._count(run, published, [])
                self._unmarked.difference_update(row.id for row in published)
            await self._update_gauges(empty=False)

    def _forget_unmarked(self) -> None:
        # The rows stay unpublished in the database: after the restart they are
        # fetched and sent again (consumers drop the duplicates by id).
        self._unmarked.clear()
        self._to_mark.clear()

    def _raise_if_marking_failed(self) -> None:
        if self._marking is not None and self._marking.done():
            marking, self._marking = self._marking, None
            exc = marking.exception()
            if exc is not None:
                self._forget_unmarked()
                raise exc

    async def settle(self) -> None:
        """Wait until every acknowledged row is marked published (or the marking failed)."""
        marking, self._marking = self._marking, None
        if marking is None:
            return
        self._mark_now.set()
        try:
            await marking
        except Exception as exc:
            self._forget_unmarked()
            log.warning("relay.marking_failed", error=str(exc), error_type=type(exc).__name__)
            raise

    async def _send(self, rows: list[_Row]) -> tuple[RelayRun, list[_Row], list[_Row]]:
        """Send rows to the broker and wait for every acknowledgement (acks=all).

        Rows go out as one record batch per partition (``send_batch``), which costs
        the relay about half the CPU per event of one ``send`` each: a future, a
        partitioner call and an accumulator step per message were most of its work.
        Partitions are chosen exactly as the producer's default partitioner does
        (murmur2 of the key), so an order's events stay on the partition they
        always had; the hash is cached, since an order's events share a key.
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("relay not started")
        run = RelayRun(started_at=utcnow())
        run.detected = len(rows)
        partitions: dict[str, list[int]] = {}
        filling: dict[tuple[str, int], _Batch] = {}
        batches: list[_Batch] = []
        for row in rows:
            topic = row.topic
            if topic not in partitions:
                partitions[topic] = await self._partitions_for(producer, topic)
            in_topic = partitions[topic]
            key = row.key.encode()
            where = (topic, in_topic[(_key_hash(key) & 0x7FFFFFFF) % len(in_topic)])
            batch = filling.get(where)
            if batch is None or not batch.add(row, key):
                # First row for this partition, or the batch is full: start the next one.
                batch = filling[where] = _Batch(where[0], where[1], producer.create_batch())
                batches.append(batch)
                if not batch.add(row, key):
                    raise ValueError(f"outbox row {row.id} is larger than a record batch")
        futures = [await producer.send_batch(b.builder, b.topic, partition=b.partition) for b in batches]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        outcome_of = {row.id: out for batch, out in zip(batches, outcomes, strict=True) for row in batch.rows}
        client = self._broker_client()
        cluster_id = client.cluster_id if client is not None else None
        for batch, outcome in zip(batches, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                where = TopicPartition(batch.topic, batch.partition)
                reset = self.watch.note(where, outcome.offset, cluster_id)
                self._reset = self._reset or reset

        published: list[_Row] = []
        failed: list[_Row] = []
        broken_keys: set[str] = set()
        first_error: BaseException | None = None
        for row in rows:
            outcome = outcome_of[row.id]
            # After a failure, later rows of the same key stay unpublished even if
            # they went out: they are sent again after the failed one, so the
            # last copy a consumer sees of each key is in order.
            if isinstance(outcome, BaseException) or row.key in broken_keys:
                failed.append(row)
                broken_keys.add(row.key)
                if isinstance(outcome, BaseException) and first_error is None:
                    first_error = outcome
            else:
                published.append(row)
        run.published = len(published)
        run.failed = len(failed)
        now = time.time()
        latency = metrics.RELAY_COMMIT_TO_PUBLISH_SECONDS.labels(self.service)
        for row in published:
            latency.observe(max(0.0, now - row.created_at))
        if first_error is not None:
            run.error = f"{type(first_error).__name__}: {first_error}"
        return run, published, failed

    async def _partitions_for(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        """The topic's partitions, which must be as many as configured.

        Bounded: a topic that vanished is not created by our clients' metadata requests
        (casebridge_shared.kafka), and the producer would wait for it until its own
        timeout; the restart that follows creates it and checks the broker.
        """
        if topic not in self._made:
            # An outbox row for a topic the relay was not told of: made like its own
            # (our clients' lookups never make one), and watched from now on.
            await self._make_topics([topic])
            if topic not in self.topics:
                self.topics.append(topic)
                self.watch.topics.append(topic)
        found = sorted(await asyncio.wait_for(producer.partitions_for(topic), timeout=self.check_interval))
        if len(found) != self.settings.kafka_topic_partitions:
            raise TopicMisconfigured(
                f"topic {topic} has {len(found)} partitions where {self.settings.kafka_topic_partitions} "
                "are configured (kafka_topic_partitions); nothing is published to it until the topic "
                "or the setting is changed"
            )
        return found

    async def _finish(self, run: RelayRun, published: list[_Row], failed: list[_Row]) -> None:
        """Mark the batch in the database, then count it."""
        await self._record([(run, published, failed)])
        self._count(run, published, failed)
        await self._update_gauges(empty=False)

    def _count(self, run: RelayRun, published: list[_Row], failed: list[_Row]) -> None:
        per_topic: dict[str, int] = {}
        for row in published:
            per_topic[row.topic] = per_topic.get(row.topic, 0) + 1
        for topic, count in per_topic.items():
            metrics.RELAY_PUBLISHED.labels(self.service, topic).inc(count)
        if failed:
            metrics.RELAY_FAILED.labels(self.service).inc(len(failed))

    async def _fetch(self, after: int | None = None) -> list[_Row]:
        # Sent and acknowledged, marking pending: left out of the read. Taken before
        # the query runs, and an id leaves the set only after its mark committed, so
        # a row missing here shows as published in this read. (Mostly every such row
        # is at or below ``after``, the last row sent, and the clause is not needed.)
        unmarked = (
            sorted(self._unmarked)
            if self._unmarked and (after is None or after < max(self._unmarked))
            else None
        )
        if self.db.dialect == "postgresql":
            return await self._fetch_from_postgresql(after, unmarked)
        params: dict[str, Any] = {}
        if after is not None:
            params["after"] = after
        if unmarked is not None:
            params["ids"] = json.dumps(unmarked)
        query = self._sqlite_read(after is not None, unmarked is not None)
        async with self.db.session() as session:
            result = await session.execute(query, params)
            return [_Row(r[0], r[1], r[2], r[3], r[4]) for r in result.all()]

    def _sqlite_read(self, after: bool, unmarked: bool) -> Select[Any]:
        """The read of ``_fetch`` on SQLite, built once per shape: each call only binds values.

        Rows waiting to be marked are left out of nearly every read while marking
        waits for its interval, and building the statement afresh (``json_each``
        and all) cost as much as running it.
        """
        key = (after, unmarked)
        query = self._sqlite_reads.get(key)
        if query is None:
            outbox = self.tables.outbox
            query = (
                select(
                    outbox.c.id,
                    outbox.c.topic,
                    outbox.c.message_key,
                    outbox.c.payload,
                    self._epoch_seconds(outbox.c.created_at),
                )
                .order_by(outbox.c.id)
                .limit(self.batch_size)
            )
            if after:
                query = query.where(outbox.c.id > bindparam("after", type_=BigInteger))
            if unmarked:
                query = query.where(~self._id_in())
            self._sqlite_reads[key] = query
        return query

    async def _fetch_from_postgresql(self, after: int | None, unmarked: list[int] | None) -> list[_Row]:
        """The same read as ``_fetch``'s, by asyncpg directly.

        SQLAlchemy's processing of the result rows (and of the statement) was a
        large part of the relay's CPU on PostgreSQL, where the read is the slower
        half of the pipeline (see ADR-0003); asyncpg hands back its records as they are,
        with the statement prepared once per connection.
        """
        table = self.db.engine.dialect.identifier_preparer.format_table(self.tables.outbox)
        conditions: list[str] = []
        args: list[Any] = []
        if after is not None:
            args.append(after)
            conditions.append(f"id > ${len(args)}")
        if unmarked is not None:
            args.append(unmarked)
            conditions.append(f"NOT (id = ANY(${len(args)}::bigint[]))")
        args.append(self.batch_size)
        sql = (
            "SELECT id, topic, message_key, payload, date_part('epoch', created_at)::float8"
            f" FROM {table}{' WHERE ' + ' AND '.join(conditions) if conditions else ''}"
            f" ORDER BY id LIMIT ${len(args)}"
        )
        async with self.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            records = await raw.driver_connection.fetch(sql, *args)  # type: ignore[union-attr]
        return [_Row(r[0], r[1], r[2], r[3], r[4]) for r in records]

    def _epoch_seconds(self, column: Column[Any]) -> ColumnElement[float]:
        """The timestamp as seconds since the epoch, worked out by the database.

        Turning a thousand timestamps into aware datetimes in Python was half of
        the CPU a fetch cost; the relay only needs the age, for the latency metric.
        SQLite's ``julianday`` counts whole milliseconds, plenty for that.
        """
        if self.db.dialect == "postgresql":
            return cast(func.date_part("epoch", column), Float)
        return cast((func.julianday(column) - 2440587.5) * 86400.0, Float)

    def _id_in(self, ids: list[int] | None = None) -> ColumnElement[bool]:
        return id_in(self.tables, self.db.dialect, ids)

    async def _record(self, runs: Sequence[tuple[RelayRun, list[_Row], list[_Row]]]) -> None:
        """Write runs' outcome in one transaction: rows published or failed, one job-log entry per run."""
        outbox = self.tables.outbox
        now = utcnow()
        published = [row.id for _, rows, _ in runs for row in rows]
        async with self.db.write_session() as session:
            if self.db.dialect == "postgresql":
                # A mark lost in a crash only sends its rows again (consumers drop the
                # copies), so the commit need not wait for the WAL to reach the disk.
                await session.execute(text("SET LOCAL synchronous_commit = off"))
            if published:
                await move_rows(
                    session,
                    self.db.dialect,
                    outbox,
                    self.tables.published,
                    self._id_in(published),
                    computed={
                        "published_at": lambda _: literal(now, UTCDateTime),
                        "attempts": lambda c: c.attempts + 1,
                    },
                )
            for run, _, failed in runs:
                if failed:
                    await session.execute(
                        update(outbox)
                        .where(self._id_in([r.id for r in failed]))
                        .values(attempts=outbox.c.attempts + 1, last_error=run.error)
                    )
            await self.watch.save(session)
            await session.execute(
                insert(self.tables.relay_runs),
                [
                    {
                        "relay": self.name,
                        "started_at": run.started_at,
                        "finished_at": now,
                        "detected": run.detected,
                        "published": run.published,
                        "failed": run.failed,
                        "error": run.error,
                    }
                    for run, _, _ in runs
                ],
            )
            await session.commit()

    async def _record_failed_run(self, exc: BaseException) -> None:
        await self._record_note(f"{type(exc).__name__}: {exc}")

    async def _record_note(self, error: str, detected: int = 0) -> None:
        """A job-log entry for what is not a batch: a failure, a broker reset. Best effort."""
        now = utcnow()
        with contextlib.suppress(Exception):
            async with self.db.write_session() as session:
                await session.execute(
                    insert(self.tables.relay_runs).values(
                        relay=self.name,
                        started_at=now,
                        finished_at=now,
                        detected=detected,
                        published=0,
                        failed=0,
                        error=error,
                    )
                )
                await session.commit()

    async def _update_gauges(self, *, empty: bool) -> None:
        if empty:
            metrics.RELAY_BACKLOG.labels(self.service).set(0)
            metrics.RELAY_OLDEST_UNPUBLISHED_SECONDS.labels(self.service).set(0)
            self._gauges_at = 0.0
            return
        # Counting the backlog costs a scan of the unpublished rows: during a drain
        # once a second is plenty for a gauge scraped every 15 s or so.
        if time.monotonic() - self._gauges_at < 1.0:
            return
        self._gauges_at = time.monotonic()
        # Rows on the broker whose marking is still pending are not backlog; during a
        # drain the gauge counted up to a mark interval's worth of them.
        status = await relay_status(self.db, self.tables, runs=0, leaving_out=self._unmarked)
        metrics.RELAY_BACKLOG.labels(self.service).set(status.backlog)
        metrics.RELAY_OLDEST_UNPUBLISHED_SECONDS.labels(self.service).set(
            status.oldest_unpublished_age_seconds or 0
        )

    async def _maybe_purge(self) -> None:
        now = utcnow()
        if now - self._last_purge < timedelta(minutes=1):
            return
        self._last_purge = now
        await purge_published(self.db, self.tables, older_than=now - self.retention)


async def purge_published(db: Database, tables: OutboxTables, *, older_than: datetime) -> int:
    """Drop published events and job-log entries past the retention period."""
    published = tables.published
    async with db.write_session() as session:
        result = await session.execute(delete(published).where(published.c.published_at < older_than))
        await session.execute(delete(tables.relay_runs).where(tables.relay_runs.c.started_at < older_than))
        await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
