"""Trace context across Kafka (issue 27, 3): the outbox row keeps the emitting span, the relay's
headers carry it, a consumer continues it from the header (else the CloudEvents attribute),
and the worker's log lines name the trace."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from aiokafka import ConsumerRecord
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import MetaData, select

from casebridge_shared import telemetry, testing
from casebridge_shared.db import Database, utcnow
from casebridge_shared.events import CloudEvent, EventPayload, published_by
from casebridge_shared.inbox import EventConsumer, inbox_tables
from casebridge_shared.logs import configure_logging
from casebridge_shared.outbox import UnitOfWork, _record_headers, outbox_tables
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.tracing import context_from, current_ids, record_context, tracer

TOPIC = "casebridge.test-traced.v1"
SOURCE = "/casebridge/test"
metadata = MetaData()
OUTBOX = outbox_tables(metadata)
INBOX = inbox_tables(metadata)

HEADER_TRACE = "0af7651916cd43dd8448eb211c80319c"
HEADER_PARENT = f"00-{HEADER_TRACE}-b7ad6b7169203331-01"
ATTRIBUTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ATTRIBUTE_PARENT = f"00-{ATTRIBUTE_TRACE}-00f067aa0ba902b7-01"


class TracedThing(EventPayload):
    event_type = "casebridge.test.traced-thing.v1"
    topic: ClassVar[str] = TOPIC  # type: ignore[misc]
    name: str


class FollowUp(EventPayload):
    event_type = "casebridge.test.follow-up.v1"
    topic: ClassVar[str] = TOPIC  # type: ignore[misc]
    name: str


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    with telemetry.exporting_to(exporter):
        yield exporter


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A worker's JSON logging (``configure_logging``, as ``<service> worker`` sets it up) into a
    buffer standing in for stderr; the configuration before it is put back afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("traced-worker", json=True)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.scratch_database(tmp_path, "cbt_tracing") as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database


def _event(name: str, **attributes: Any) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=SOURCE,
        type=TracedThing.event_type,
        time=utcnow(),
        partitionkey=name,
        aggregateversion=1,
        data={"name": name},
        **attributes,
    )


def _record(
    event: CloudEvent, headers: list[tuple[str, bytes]], offset: int = 0
) -> ConsumerRecord[bytes, bytes]:
    value = event.to_bytes()
    return ConsumerRecord(
        topic=TOPIC,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=event.partitionkey.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(event.partitionkey),
        serialized_value_size=len(value),
        headers=headers,
    )


def _hex(span_id: int) -> str:
    return trace.format_span_id(span_id)


# -- the relay's headers ------------------------------------------------------------------


def test_the_relay_sends_the_event_s_trace_context_as_headers() -> None:
    traced = _event("a", traceparent=HEADER_PARENT, tracestate="congo=t61rcWkgMzE").to_bytes().decode()
    assert _record_headers(traced) == [
        ("content-type", b"application/cloudevents+json"),
        ("traceparent", HEADER_PARENT.encode()),
        ("tracestate", b"congo=t61rcWkgMzE"),
    ]
    # Without the attribute, a "traceparent" inside the data is not the event's trace context.
    untraced = CloudEvent.model_validate(
        {**json.loads(_event("b").to_bytes()), "data": {"name": "b", "traceparent": HEADER_PARENT}}
    )
    assert _record_headers(untraced.to_bytes().decode()) == [
        ("content-type", b"application/cloudevents+json")
    ]


async def test_an_outbox_row_keeps_the_span_that_emitted_its_event(db: Database) -> None:
    telemetry.setup_telemetry("test")  # as every api and worker does: the provider, no exporter
    with tracer().start_as_current_span("request") as span:
        async with UnitOfWork(db, OUTBOX, SOURCE) as uow:
            emitted = uow.emit(TracedThing(name="a"), key="a", version=1)
            await uow.commit()
    made = span.get_span_context()
    expected = f"00-{trace.format_trace_id(made.trace_id)}-{_hex(made.span_id)}-{made.trace_flags:02x}"
    assert emitted.traceparent == expected
    async with db.session() as session:
        [payload] = (await session.execute(select(OUTBOX.outbox.c.payload))).scalars()
    assert ("traceparent", expected.encode()) in _record_headers(payload)
    # Outside any span: no trace context, no header.
    async with UnitOfWork(db, OUTBOX, SOURCE) as uow:
        assert uow.emit(TracedThing(name="b"), key="b", version=1).traceparent is None


# -- the consumer's side -------------------------------------------------------------------


def test_the_header_wins_over_the_attribute_and_the_attribute_stands_in_for_it() -> None:
    def parent_of(context: Any) -> tuple[str, str]:
        span_context = trace.get_current_span(context).get_span_context()
        return trace.format_trace_id(span_context.trace_id), _hex(span_context.span_id)

    both = record_context([("traceparent", HEADER_PARENT.encode())], ATTRIBUTE_PARENT)
    assert parent_of(both) == (HEADER_TRACE, "b7ad6b7169203331")
    only_attribute = record_context([("content-type", b"application/cloudevents+json")], ATTRIBUTE_PARENT)
    assert parent_of(only_attribute) == (ATTRIBUTE_TRACE, "00f067aa0ba902b7")
    # A malformed header is no parent: the attribute is used instead.
    garbled = record_context([("traceparent", b"00-nonsense-01")], ATTRIBUTE_PARENT)
    assert parent_of(garbled) == (ATTRIBUTE_TRACE, "00f067aa0ba902b7")
    assert not trace.get_current_span(record_context([], None)).get_span_context().is_valid
    with_state = record_context(
        [("traceparent", HEADER_PARENT.encode()), ("tracestate", b"congo=t61rcWkgMzE")]
    )
    assert trace.get_current_span(with_state).get_span_context().trace_state.get("congo") == "t61rcWkgMzE"
    assert not trace.get_current_span(context_from("not a traceparent")).get_span_context().is_valid


class Handler:
    def __init__(self) -> None:
        self.ids: list[tuple[str, str] | None] = []
        self.emitted: list[CloudEvent] = []

    async def handle(self, uow: UnitOfWork, event: CloudEvent, payload: EventPayload) -> None:
        self.ids.append(current_ids())
        structlog.get_logger("casebridge.test").info("thing.applied", thing=event.partitionkey)
        self.emitted.append(uow.emit(FollowUp(name=event.partitionkey), key=event.partitionkey, version=1))


def _consumer(db: Database, handler: Handler) -> EventConsumer:
    # Never connects: records are handed to ``process`` directly.
    settings = ServiceSettings(environment="test", kafka_bootstrap_servers="127.0.0.1:9")
    return EventConsumer(
        db,
        OUTBOX,
        INBOX,
        settings,
        service="traced",
        group="traced",
        topics=[TOPIC],
        handlers={TracedThing.event_type: handler.handle},
        sources=published_by(SOURCE.removeprefix("/casebridge/"), TracedThing.event_type),
        source=SOURCE,
    )


def _consumer_span(spans: InMemorySpanExporter, thing: str) -> ReadableSpan:
    found = [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.CONSUMER and (s.attributes or {}).get("messaging.kafka.offset") == int(thing)
    ]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


async def test_a_consumer_continues_the_producer_s_trace_and_so_do_its_events_and_logs(
    db: Database, spans: InMemorySpanExporter, json_logs: io.StringIO
) -> None:
    handler = Handler()
    consumer = _consumer(db, handler)
    header = [("traceparent", HEADER_PARENT.encode())]
    assert (await consumer.process(_record(_event("1", traceparent=ATTRIBUTE_PARENT), header, 1))).applied
    assert (await consumer.process(_record(_event("2", traceparent=ATTRIBUTE_PARENT), [], 2))).applied
    assert (await consumer.process(_record(_event("3"), [], 3))).applied

    from_header, from_attribute, fresh = (_consumer_span(spans, n) for n in ("1", "2", "3"))
    assert from_header.parent is not None and from_header.parent.is_remote
    assert (trace.format_trace_id(from_header.context.trace_id), _hex(from_header.parent.span_id)) == (
        HEADER_TRACE,
        "b7ad6b7169203331",
    )
    assert from_attribute.parent is not None
    assert (trace.format_trace_id(from_attribute.context.trace_id), _hex(from_attribute.parent.span_id)) == (
        ATTRIBUTE_TRACE,
        "00f067aa0ba902b7",
    )
    assert fresh.parent is None and fresh.context.trace_id not in (
        int(HEADER_TRACE, 16),
        int(ATTRIBUTE_TRACE, 16),
    )
    assert (from_header.attributes or {})["messaging.consumer.group.name"] == "traced"

    # The handler ran in the consumer span, and what it emitted continues from it.
    for span, ids, emitted in zip(
        (from_header, from_attribute, fresh), handler.ids, handler.emitted, strict=True
    ):
        trace_id, span_id = trace.format_trace_id(span.context.trace_id), _hex(span.context.span_id)
        assert ids == (trace_id, span_id)
        assert emitted.traceparent is not None and emitted.traceparent.startswith(f"00-{trace_id}-{span_id}-")

    # The worker's log line names the trace (today's field name ``trace_id``) and the span.
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.startswith("{")]
    applied = [line for line in lines if line.get("event") == "thing.applied"]
    assert [(line["thing"], line["trace_id"], line["span_id"]) for line in applied] == [
        (str(n), trace_id, span_id)
        for n, (trace_id, span_id) in zip((1, 2, 3), handler.ids, strict=True)  # type: ignore[misc]
    ]
    assert applied[0]["trace_id"] == HEADER_TRACE


# -- the process's setup -------------------------------------------------------------------

_PROBE = """
from opentelemetry import trace
from casebridge_shared import telemetry, tracing
telemetry.setup_telemetry("probe")
with tracing.tracer().start_as_current_span("probe-span"):
    pass
provider = trace.get_tracer_provider()
print(type(provider).__name__, telemetry.exporting())
if hasattr(provider, "shutdown"):
    provider.shutdown()  # flushes the batch to the collector before the process ends
"""


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_spans_go_over_otlp_only_when_an_endpoint_is_set() -> None:
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{collector.server_address[1]}"
        assert _probe() == "TracerProvider False"
        assert _Collector.received == []
        assert (
            _probe(OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_SERVICE_NAME="probe-renamed")
            == "TracerProvider True"
        )
        [(path, content_type, body)] = _Collector.received
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        assert b"probe-span" in body and b"probe-renamed" in body
        # Disabled: the API's no-op provider stays, even with an endpoint set.
        assert (
            _probe(OTEL_SDK_DISABLED="true", OTEL_EXPORTER_OTLP_ENDPOINT=url) == "ProxyTracerProvider False"
        )
        assert len(_Collector.received) == 1
    finally:
        collector.shutdown()
