"""W3C trace context on the OpenTelemetry API: one trace from a request through every event.

The current span (OpenTelemetry's context, a contextvar) is the one source of the
trace: a request's server span, a consumer's span for one event, a delivery's span.
This module turns it into what travels between processes and back: the
``traceparent``/``tracestate`` strings an event carries (the CloudEvents
distributed-tracing extension), the Kafka record headers the relay sends, and
the parent a consumer continues from. Always the W3C format, whatever
``OTEL_PROPAGATORS`` says: the CloudEvents attribute is defined as W3C trace context.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_PROPAGATOR = TraceContextTextMapPropagator()
TRACER_NAME = "casebridge"


def tracer() -> trace.Tracer:
    """Our own spans' tracer, from whatever provider the process set up (casebridge_shared.telemetry)."""
    return trace.get_tracer(TRACER_NAME)


def parse_trace_id(traceparent: str | None) -> str | None:
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if not match or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def current_trace_headers(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate`` if any) of the current span; empty outside any trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def current_traceparent() -> str | None:
    """The current span as a W3C ``traceparent``, or None outside any trace."""
    return current_trace_headers().get("traceparent")


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, or None outside any trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def context_from(traceparent: str | None, tracestate: str | None = None) -> Context:
    """The remote parent named by a ``traceparent``; an empty context (a new trace) without one."""
    carrier = {"traceparent": traceparent} if traceparent else {}
    if traceparent and tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier, context=Context())


def kafka_trace_headers(traceparent: str | None, tracestate: str | None = None) -> list[tuple[str, bytes]]:
    """The Kafka record headers that carry an event's trace context (W3C names, UTF-8 values)."""
    if not traceparent:
        return []
    headers = [("traceparent", traceparent.encode())]
    if tracestate:
        headers.append(("tracestate", tracestate.encode()))
    return headers


def _header(headers: Sequence[tuple[str, bytes | None]], name: str) -> str | None:
    # The first one: a record passed on (a dead letter) may carry a later copy of its own.
    for key, value in headers:
        if key.lower() == name and value is not None:
            return value.decode("latin-1")
    return None


def record_context(
    headers: Sequence[tuple[str, bytes | None]],
    ce_traceparent: str | None = None,
    ce_tracestate: str | None = None,
) -> Context:
    """The parent of a consumer's span: the record's ``traceparent`` header, or else the event's
    CloudEvents ``traceparent`` attribute (a producer that did not set the header, an event
    published before the relay set it), or else a new trace."""
    header = _header(headers, "traceparent")
    if header is not None and parse_trace_id(header) is not None:
        return context_from(header, _header(headers, "tracestate"))
    return context_from(ce_traceparent, ce_tracestate)


@contextmanager
def span_from(
    name: str,
    parent: Context,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span with an explicit parent (a remote one, usually), current while the block runs."""
    with tracer().start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as span:
        yield span
