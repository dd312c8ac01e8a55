"""Order events on ``casebridge.orders.v1``: each carries the order and its product snapshot (A4)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from casebridge_shared.events import ORDERS_TOPIC, EventPayload


class ProductSnapshotData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: str
    title: str
    description: str
    deliverables: list[str]
    category: str
    price: Decimal
    currency: str
    version: int


class CustomerContactData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    full_name: str
    email: str
    phone: str | None


class OrderState(EventPayload):
    topic = ORDERS_TOPIC

    order_id: str
    customer: CustomerContactData
    product: ProductSnapshotData
    description: str
    status: str
    version: int
    created_at: datetime
    updated_at: datetime


class OrderPlaced(OrderState):
    event_type = "casebridge.orders.order-placed.v1"
    summary = "A customer ordered a legal product."


class OrderUpdated(OrderState):
    event_type = "casebridge.orders.order-updated.v1"
    summary = "The customer changed the order's description of their need."


class OrderCancelled(OrderState):
    event_type = "casebridge.orders.order-cancelled.v1"
    summary = "The order was cancelled by the customer or staff."
    reason: str | None
    cancelled_by: str


class OrderCompleted(OrderState):
    event_type = "casebridge.orders.order-completed.v1"
    summary = "The order's case was closed: the work on the order is done."
