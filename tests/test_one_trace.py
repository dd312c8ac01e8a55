"""Issue 27 (3): one trace from the customer's click to the staff member's phone.

All four services for real (apis over HTTP, workers, one broker), their spans exported to
memory: ``POST /orders`` on order-intake, the order-placed event applied by case-handling,
the case-opened event it emits applied by the notifier, the notifier's deliveries (live
stream, web push, webhook), and the order-placed event applied by the customer-ledger are
one trace, and each consumer's span is a child of the span that emitted its event.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id

from casebridge_shared import telemetry
from casebridge_shared.testing import DatabaseTemplates, wait_until
from notifier.testing import PushService, WebhookReceiver

from .conftest import ADMIN, Stack, ledger_platform, notifier_knows, notifier_platform
from .test_order_alerts_staff import next_event, serving
from .test_order_to_case import place_order

ORDER_PLACED = "casebridge.orders.order-placed.v1"
CASE_OPENED = "casebridge.cases.case-opened.v1"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span ended while the test runs; requested before ``stack`` so its apps are instrumented."""
    exporter = InMemorySpanExporter()
    with telemetry.exporting_to(exporter):
        yield exporter


def _consumed(spans: list[ReadableSpan], service: str, event_type: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.kind is SpanKind.CONSUMER
        and s.name == f"process {event_type}"
        and (s.attributes or {}).get("casebridge.service") == service
    ]


def _delivered(spans: list[ReadableSpan], channel: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == f"deliver {channel}"]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _in_request(span: ReadableSpan, request: ReadableSpan, by_id: dict[int, ReadableSpan]) -> bool:
    """``span`` is the request's server span or a span inside it (same process, up the parents)."""
    current: ReadableSpan | None = span
    while current is not None:
        if current.context.span_id == request.context.span_id:
            return True
        parent = _parent_id(current)
        current = by_id.get(parent) if parent is not None else None
    return False


def _describe(spans: list[ReadableSpan]) -> str:
    return "; ".join(sorted({f"{s.name} ({(s.attributes or {}).get('casebridge.service')})" for s in spans}))


@pytest.mark.slow
async def test_an_order_is_one_trace_from_the_click_to_the_phone_and_the_ledger(
    spans: InMemorySpanExporter, stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    push, hooks = PushService(), WebhookReceiver()
    async with (
        notifier_platform(stack, db_templates, tmp_path) as alerts,
        ledger_platform(stack, db_templates, tmp_path, relay_poll_interval_seconds=0.01),
        serving(push.app) as push_server,
        serving(hooks.app) as hook_server,
    ):
        staff_token = await stack.staff("sam@casebridge.example", "staff")
        product_id = await stack.product()
        staff_alerts = stack.client(alerts, staff_token)
        admin_alerts = stack.client(alerts, await stack.login(*ADMIN))
        await notifier_knows(alerts, "sam@casebridge.example")
        phone = push.device(push_server.url, "sam-phone")
        assert (await staff_alerts.post("/push-subscriptions", json=phone.subscription())).status_code == 201
        hook = await admin_alerts.post(
            "/webhooks", json={"url": f"{hook_server.url}/hook", "event_types": [CASE_OPENED]}
        )
        assert hook.status_code == 201, hook.text

        async with staff_alerts.stream("GET", "/notifications/stream", timeout=120) as live:
            lines = live.aiter_lines()
            customer = await stack.register_customer("ada@example.org")
            order_id = await place_order(customer, product_id)
            event = await next_event(lines)
            assert event["data"]["order_id"] == order_id

        finished: list[ReadableSpan] = []

        async def whole_path_recorded() -> bool:
            finished[:] = spans.get_finished_spans()
            return all(
                (
                    _consumed(finished, "case-handling", ORDER_PLACED),
                    _consumed(finished, "notifier", CASE_OPENED),
                    _consumed(finished, "customer-ledger", ORDER_PLACED),
                    _delivered(finished, "in_app"),
                    _delivered(finished, "push"),
                    _delivered(finished, "webhook"),
                    hooks.received,
                )
            )

        await wait_until(whole_path_recorded, timeout=120, message="the spans of the whole path")

    [request] = [s for s in finished if s.kind is SpanKind.SERVER and s.name == "POST /orders"]
    trace_id = request.context.trace_id
    [case_handling] = _consumed(finished, "case-handling", ORDER_PLACED)
    [notifier] = _consumed(finished, "notifier", CASE_OPENED)
    [ledger] = _consumed(finished, "customer-ledger", ORDER_PLACED)
    deliveries = [
        *_delivered(finished, "in_app"),
        *_delivered(finished, "push"),
        *_delivered(finished, "webhook"),
    ]
    on_the_path = [case_handling, notifier, ledger, *deliveries]
    assert {s.context.trace_id for s in on_the_path} == {trace_id}, _describe(on_the_path)

    # Each consumer continues the span that emitted its event: the request's (its server span,
    # or FastAPI's own span for the endpoint inside it) for order-placed,
    # case-handling's consumer span (in which the case was opened) for case-opened.
    by_id = {s.context.span_id: s for s in finished}
    emitter = by_id[_parent_id(case_handling) or 0]
    assert _in_request(emitter, request, by_id), (emitter.name, emitter.attributes)
    assert _parent_id(ledger) == emitter.context.span_id
    assert _parent_id(notifier) == case_handling.context.span_id
    # The case-opened event in between carries the same context in its header and attribute.
    assert (notifier.attributes or {}).get("cloudevents.event_source") == "/casebridge/case-handling"
    # Every delivery is a child of the notifier's consumer span, which queued it.
    assert {_parent_id(s) for s in deliveries} == {notifier.context.span_id}
    # The webhook's receiver got the trace too (the delivery's span or its HTTP client span).
    body, headers = hooks.received[0]
    assert order_id.encode() in body
    assert headers["traceparent"].startswith(f"00-{format_trace_id(trace_id)}-")
