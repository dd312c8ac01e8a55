"""customer-ledger's view of order and case events (tolerant readers, never the producers' code)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from casebridge_shared.events import EventReader, published_by

ORDER_PLACED = "casebridge.orders.order-placed.v1"
ORDER_UPDATED = "casebridge.orders.order-updated.v1"
ORDER_CANCELLED = "casebridge.orders.order-cancelled.v1"
ORDER_COMPLETED = "casebridge.orders.order-completed.v1"

CASE_EVENTS = {
    "casebridge.cases.case-opened.v1": "case opened",
    "casebridge.cases.case-assigned.v1": "case assigned",
    "casebridge.cases.status-changed.v1": "status changed",
    "casebridge.cases.analysis-recorded.v1": "analysis recorded",
    "casebridge.cases.communication-recorded.v1": "communication recorded",
    "casebridge.cases.solution-proposed.v1": "solution proposed",
    "casebridge.cases.attachment-added.v1": "document added",
    "casebridge.cases.case-closed.v1": "case closed",
    "casebridge.cases.case-cancelled.v1": "case cancelled",
}


# order-intake's API limits (OrderCreate, ProductCreate, identity's user): a longer
# field can only come from a broken or forged producer; it is dead-lettered with
# the field named, never written to the journal (tests/test_event_rules.py).
Id = Annotated[str, Field(min_length=1, max_length=36)]


class OrderedProduct(EventReader):
    title: Annotated[str, Field(max_length=200)]
    category: Annotated[str, Field(max_length=100)]


class OrderingCustomer(EventReader):
    customer_id: Id
    full_name: Annotated[str, Field(max_length=200)]
    email: Annotated[str, Field(max_length=320)]
    phone: Annotated[str | None, Field(max_length=40)] = None


class OrderState(EventReader):
    order_id: Id
    customer: OrderingCustomer
    product: OrderedProduct
    description: Annotated[str, Field(max_length=20_000)]
    status: Annotated[str, Field(max_length=32)]
    version: int
    updated_at: datetime


class CaseProgress(EventReader):
    """case-handling's API limits, as for orders above."""

    case_id: Id
    order_id: Id
    customer_id: Id
    status: Annotated[str, Field(max_length=32)]
    at: datetime
    product_title: Annotated[str | None, Field(max_length=200)] = None
    assignee_name: Annotated[str | None, Field(max_length=200)] = None
    solution_summary: Annotated[str | None, Field(max_length=2_000)] = None
    reason: Annotated[str | None, Field(max_length=2000)] = None


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    ORDER_PLACED: OrderState,
    ORDER_UPDATED: OrderState,
    ORDER_CANCELLED: OrderState,
    ORDER_COMPLETED: OrderState,
    **dict.fromkeys(CASE_EVENTS, CaseProgress),
}

# Order events are order-intake's to publish, case events case-handling's (their contracts, docs/events).
SOURCES: dict[str, str] = {
    **published_by("order-intake", ORDER_PLACED, ORDER_UPDATED, ORDER_CANCELLED, ORDER_COMPLETED),
    **published_by("case-handling", *CASE_EVENTS),
}
