"""Structured logs never carry the personal fields of events (docs/events/classification.md).

A consumer's handler that fails on an event raises with the event's values in
the exception: SQLAlchemy's parameters, PostgreSQL's DETAIL line, pydantic's
input. The consumer logs each failure; these tests make it fail on a real
database, against a real broker, and look for the email in every log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
import structlog
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.exc import IntegrityError
from structlog.testing import capture_logs

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.db import Database, utcnow
from casebridge_shared.events import CloudEvent, EventPayload, published_by
from casebridge_shared.inbox import EventConsumer, inbox_tables, list_dead_letters
from casebridge_shared.kafka import guarded_producer
from casebridge_shared.logs import configure_logging, describe_error
from casebridge_shared.outbox import UnitOfWork, outbox_tables
from casebridge_shared.settings import ServiceSettings

TOPIC = "casebridge.test-people.v1"
EMAIL = "jane.doe.private@example.org"
FULL_NAME = "Jane Private Doe"

metadata = MetaData()
OUTBOX = outbox_tables(metadata)
INBOX = inbox_tables(metadata)
PEOPLE = Table(
    "people",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("full_name", String(200), nullable=False),
)


class PersonSeen(EventPayload):
    event_type = "casebridge.test.person-seen.v1"
    topic: ClassVar[str] = TOPIC  # type: ignore[misc]
    email: str
    full_name: str


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.scratch_database(tmp_path, "cbt_logpriv") as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database


async def _duplicate_email_error(db: Database) -> IntegrityError:
    async with db.engine.begin() as conn:
        await conn.execute(insert(PEOPLE).values(email=EMAIL, full_name=FULL_NAME))
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(PEOPLE).values(email=EMAIL, full_name=FULL_NAME))
    except IntegrityError as exc:
        return exc
    raise AssertionError("the unique email did not refuse a second row")


async def test_a_database_error_is_described_without_the_values_it_was_raised_over(db: Database) -> None:
    exc = await _duplicate_email_error(db)
    assert EMAIL in str(exc)  # what the consumer used to log
    described = describe_error(exc)
    assert described.startswith("IntegrityError: ")
    assert EMAIL not in described and FULL_NAME not in described


def test_a_validation_error_is_described_by_field_not_by_value() -> None:
    class Contact(BaseModel):
        email: Annotated[str, Field(max_length=10)]

    with pytest.raises(ValidationError) as caught:
        Contact(email=EMAIL)
    assert EMAIL in str(caught.value)
    described = describe_error(caught.value)
    assert "email" in described and "at most 10 characters" in described
    assert EMAIL not in described


def test_personal_keys_are_redacted_from_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("test", json=True)
    try:
        log = structlog.get_logger()
        log.info("person.seen", user_id="u-1", email=EMAIL, full_name=FULL_NAME, client_ip="203.0.113.7")
        log.warning("deliveries.failed", error=f"SMTPRecipientRefused(550, 'no such user', '{EMAIL}')")
        lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()[-2:]]
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert lines[0]["user_id"] == "u-1"
    assert lines[0]["email"] == lines[0]["full_name"] == lines[0]["client_ip"] == "[redacted]"
    # An address inside another value (a mail server's error names the recipient) is masked too.
    assert lines[1]["error"] == "SMTPRecipientRefused(550, 'no such user', '[email]')"


def _event(email: str) -> bytes:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/test",
        type=PersonSeen.event_type,
        time=utcnow(),
        partitionkey="person-1",
        aggregateversion=1,
        data={"email": email, "full_name": FULL_NAME},
    ).to_bytes()


async def test_a_failing_consumer_never_logs_the_event_s_personal_fields(
    db: Database, broker: EmbeddedBroker
) -> None:
    async def remember(uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
        assert isinstance(payload, PersonSeen)
        await uow.session.execute(insert(PEOPLE).values(email=payload.email, full_name=payload.full_name))

    await testing.create_topics(broker.bootstrap_servers, TOPIC)
    producer = guarded_producer(broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for _ in range(2):  # the second breaks the unique email on every attempt
            await producer.send_and_wait(TOPIC, value=_event(EMAIL), key=b"person-1")
    finally:
        await producer.stop()
    settings = ServiceSettings(environment="test", kafka_bootstrap_servers=broker.bootstrap_servers)
    consumer = EventConsumer(
        db,
        OUTBOX,
        INBOX,
        settings,
        service="test",
        group="people",
        topics=[TOPIC],
        handlers={PersonSeen.event_type: remember},
        sources=published_by("test", PersonSeen.event_type),
        source="/casebridge/test",
        max_attempts=2,
        retry_backoff=0.01,
        max_backoff=0.05,
    )

    async def dead_lettered() -> bool:
        return len(await list_dead_letters(db, INBOX, "people")) == 1

    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(consumer.run(stop))
        try:
            await testing.wait_until(dead_lettered, timeout=60, message="the duplicate dead-lettered")
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)

    events = [entry["event"] for entry in logs]
    assert "consumer.giving_up" in events and "consumer.dead_lettered" in events, events
    failures = [entry for entry in logs if entry["event"] in ("consumer.retrying", "consumer.giving_up")]
    assert failures and all("IntegrityError" in entry["error"] for entry in failures)
    logged = json.dumps(logs, default=str)
    assert EMAIL not in logged and FULL_NAME not in logged
    # The event itself is kept whole in the dead letters, where an operator looks next.
    (letter,) = await list_dead_letters(db, INBOX, "people")
    assert EMAIL not in letter["error"]
    assert _dump(letter).count(EMAIL) >= 1


def _dump(row: Any) -> str:
    return json.dumps(row, default=lambda v: v.decode() if isinstance(v, bytes) else str(v))
