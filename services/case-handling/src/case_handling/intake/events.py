"""case-handling's view of order-intake's events (tolerant readers, never order-intake's code).

Only the fields case-handling uses are declared; fields order-intake adds later
are ignored, so the two deploy independently.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from casebridge_shared.events import EventReader, published_by

ORDER_PLACED = "casebridge.orders.order-placed.v1"
ORDER_UPDATED = "casebridge.orders.order-updated.v1"
ORDER_CANCELLED = "casebridge.orders.order-cancelled.v1"
PRODUCT_CREATED = "casebridge.catalog.product-created.v1"
PRODUCT_UPDATED = "casebridge.catalog.product-updated.v1"
PRODUCT_ARCHIVED = "casebridge.catalog.product-archived.v1"


class ProductSnapshot(EventReader):
    product_id: str
    title: str
    description: str
    deliverables: list[str]
    category: str
    price: Decimal
    currency: str
    version: int


class CustomerContact(EventReader):
    customer_id: str
    full_name: str
    email: str
    phone: str | None = None


class OrderState(EventReader):
    order_id: str
    customer: CustomerContact
    product: ProductSnapshot
    description: str
    status: str
    version: int
    created_at: datetime
    updated_at: datetime


class OrderCancelled(OrderState):
    reason: str | None = None
    cancelled_by: str | None = None


class ProductState(EventReader):
    product_id: str
    title: str
    description: str
    deliverables: list[str]
    category: str
    price: Decimal
    currency: str
    active: bool
    archived: bool
    version: int
    updated_at: datetime


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    ORDER_PLACED: OrderState,
    ORDER_UPDATED: OrderState,
    ORDER_CANCELLED: OrderCancelled,
    PRODUCT_CREATED: ProductState,
    PRODUCT_UPDATED: ProductState,
    PRODUCT_ARCHIVED: ProductState,
}

# Every one of these is order-intake's to publish (its contract, docs/events).
SOURCES: dict[str, str] = published_by("order-intake", *PAYLOAD_MODELS)
