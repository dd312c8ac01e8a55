"""The OpenTelemetry SDK, set up once per process from the standard ``OTEL_*`` variables.

Every api (``create_app``) and worker (``run_service_worker``) calls
:func:`setup_telemetry`; the first call in a process wins (in the tests, four services
share one process and one provider).

- ``OTEL_SDK_DISABLED=true``: nothing is set up; the API's no-op tracer passes a caller's
  trace context on but starts no trace of its own (no trace ids in logs for requests
  without a ``traceparent``).
- Otherwise an SDK ``TracerProvider`` (``service.name`` = ``OTEL_SERVICE_NAME`` or the
  service's name) makes the spans that carry the trace id into logs, events and
  responses. Without an exporter it has no span processor at all: an ended span is
  dropped on the spot, and the libraries are not instrumented, so that tracing costs
  a few spans per request and event and nothing else (bench/bench_tracing.py).
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set: spans
  are batched to that collector over OTLP/HTTP, and FastAPI, httpx, SQLAlchemy and
  aiokafka are instrumented for the detail a trace viewer shows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

_lock = threading.Lock()
_exporting = False
_instrumented = False

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def otlp_configured() -> bool:
    return any(os.environ.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def exporting() -> bool:
    """Whether spans go anywhere: then the libraries (and each new app) are instrumented."""
    return _exporting


def _provider(service: str) -> TracerProvider | None:
    """The process's SDK provider, made and set now if there is none yet."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if sdk_disabled():
        return None
    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    trace.set_tracer_provider(provider)
    # set_tracer_provider refuses a second provider (with a warning): read back the winner.
    winner = trace.get_tracer_provider()
    return winner if isinstance(winner, TracerProvider) else None


def setup_telemetry(service: str) -> None:
    """The provider, and with an OTLP endpoint its exporter and the instrumentations; once per process."""
    global _exporting
    with _lock:
        provider = _provider(service)
        if provider is None or _exporting or not otlp_configured():
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _start_exporting(provider, BatchSpanProcessor(OTLPSpanExporter()))


def _start_exporting(provider: TracerProvider, processor: SpanProcessor) -> None:
    global _exporting
    provider.add_span_processor(processor)
    _exporting = True
    instrument_libraries()


def instrument_libraries() -> None:
    """httpx, SQLAlchemy and aiokafka, process-wide (FastAPI is per app: :func:`instrument_app`)."""
    global _instrumented
    if _instrumented:
        return
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor().instrument()
    SQLAlchemyInstrumentor().instrument(enable_commenter=False)
    AIOKafkaInstrumentor().instrument()
    _instrumented = True


def uninstrument_libraries() -> None:
    global _instrumented
    if not _instrumented:
        return
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    AIOKafkaInstrumentor().uninstrument()
    _instrumented = False


def instrument_app(app: Any) -> None:
    """A FastAPI app's server spans, when spans are exported; built before the first request."""
    if not _exporting:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # Not for the probes and the scrape: a span per poll would be most of the traces.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="/healthz$,/readyz$,/metrics$")


@contextmanager
def exporting_to(exporter: SpanExporter, service: str = "casebridge") -> Iterator[TracerProvider]:
    """Spans exported to ``exporter`` (as each ends) while the block runs: the tests' and the
    benchmark's in-memory exporter. Apps created inside the block are instrumented."""
    global _exporting
    with _lock:
        provider = _provider(service)
        if provider is None:
            raise RuntimeError("OTEL_SDK_DISABLED is set: no spans to export")
        was_exporting = _exporting
        _start_exporting(provider, SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        # The provider keeps the processor (OpenTelemetry has no removal); a shut-down
        # exporter takes nothing more, and the libraries go back to uninstrumented.
        exporter.shutdown()
        with _lock:
            _exporting = was_exporting
            if not was_exporting:
                uninstrument_libraries()
