"""Order events on ``casebridge.orders.v1``: each carries the order and its product snapshot (A4)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict

from casebridge_shared.classification import INTERNAL, PERSONAL, PSEUDONYMOUS, PUBLIC, SENSITIVE_PERSONAL
from casebridge_shared.events import ORDERS_TOPIC, EventPayload


class ProductSnapshotData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: Annotated[str, PUBLIC]
    title: Annotated[str, PUBLIC]
    description: Annotated[str, PUBLIC]
    deliverables: Annotated[list[str], PUBLIC]
    category: Annotated[str, PUBLIC]
    price: Annotated[Decimal, PUBLIC]
    currency: Annotated[str, PUBLIC]
    version: Annotated[int, PUBLIC]  # the product's revision, as published in the catalog


class CustomerContactData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: Annotated[str, PSEUDONYMOUS]
    full_name: Annotated[str, PERSONAL]
    email: Annotated[str, PERSONAL]
    phone: Annotated[str | None, PERSONAL]


class OrderState(EventPayload):
    topic = ORDERS_TOPIC

    order_id: Annotated[str, INTERNAL]
    customer: Annotated[CustomerContactData, PERSONAL]
    product: Annotated[ProductSnapshotData, PUBLIC]
    description: Annotated[str, SENSITIVE_PERSONAL]
    status: Annotated[str, INTERNAL]
    version: Annotated[int, INTERNAL]
    created_at: Annotated[datetime, INTERNAL]
    updated_at: Annotated[datetime, INTERNAL]


class OrderPlaced(OrderState):
    event_type = "casebridge.orders.order-placed.v1"
    summary = "A customer ordered a legal product."


class OrderUpdated(OrderState):
    event_type = "casebridge.orders.order-updated.v1"
    summary = "The customer changed the order's description of their need."


class OrderCancelled(OrderState):
    event_type = "casebridge.orders.order-cancelled.v1"
    summary = "The order was cancelled by the customer or staff."
    reason: Annotated[str | None, SENSITIVE_PERSONAL]
    cancelled_by: Annotated[str, INTERNAL]  # who cancelled: "customer" or "staff", a role, not a person


class OrderCompleted(OrderState):
    event_type = "casebridge.orders.order-completed.v1"
    summary = "The order's case was closed: the work on the order is done."
