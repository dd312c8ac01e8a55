"""case-handling's view of order-intake's events (tolerant readers, never order-intake's code).

Only the fields case-handling uses are declared; fields order-intake adds later
are ignored, so the two deploy independently. The fields carry the limits of
order-intake's API (its request models in orders/ and catalog/, identity's
for the contact): an event with a longer field could only come from a broken or
forged producer and is dead-lettered with the field named, never stored
(tests/test_event_rules.py keeps the numbers in step with the API).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from casebridge_shared.events import EventReader, published_by

ORDER_PLACED = "casebridge.orders.order-placed.v1"
ORDER_UPDATED = "casebridge.orders.order-updated.v1"
ORDER_CANCELLED = "casebridge.orders.order-cancelled.v1"
PRODUCT_CREATED = "casebridge.catalog.product-created.v1"
PRODUCT_UPDATED = "casebridge.catalog.product-updated.v1"
PRODUCT_ARCHIVED = "casebridge.catalog.product-archived.v1"
MESSAGE_POSTED = "casebridge.orders.message-posted.v1"
FILE_ATTACHED = "casebridge.orders.file-attached.v1"
READ_RECEIPT = "casebridge.orders.read-receipt.v1"

# The API's limits (order-intake: OrderCreate, OrderCancel, ProductCreate, identity's user).
Id = Annotated[str, Field(min_length=1, max_length=36)]
Title = Annotated[str, Field(max_length=200)]
Text = Annotated[str, Field(max_length=20_000)]
Category = Annotated[str, Field(max_length=100)]
Currency = Annotated[str, Field(min_length=3, max_length=3)]
Price = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=3)]
Deliverables = Annotated[list[str], Field(max_length=50)]
Status = Annotated[str, Field(max_length=32)]


class ProductSnapshot(EventReader):
    product_id: Id
    title: Title
    description: Text
    deliverables: Deliverables
    category: Category
    price: Price
    currency: Currency
    version: int


class CustomerContact(EventReader):
    customer_id: Id
    full_name: Annotated[str, Field(max_length=200)]
    email: Annotated[str, Field(max_length=320)]
    phone: Annotated[str | None, Field(max_length=40)] = None


class OrderState(EventReader):
    order_id: Id
    customer: CustomerContact
    product: ProductSnapshot
    description: Text
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


class OrderCancelled(OrderState):
    reason: Annotated[str | None, Field(max_length=2000)] = None
    cancelled_by: Annotated[str | None, Field(max_length=36)] = None


class ProductState(EventReader):
    product_id: Id
    title: Title
    description: Text
    deliverables: Deliverables
    category: Category
    price: Price
    currency: Currency
    active: bool
    archived: bool
    version: int
    updated_at: datetime


class ThreadEvent(EventReader):
    """The order's thread (issue 26): what the customer wrote, attached and read."""

    order_id: Id
    customer_id: Id
    at: datetime


class CustomerMessage(ThreadEvent):
    # order-intake's MessageCreate: 1..5000 characters.
    message_id: Id
    author_name: Annotated[str | None, Field(max_length=200)] = None
    body: Annotated[str, Field(min_length=1, max_length=5_000)]


class CustomerFile(ThreadEvent):
    # Becomes a file name on our disk: only what an id looks like gets in.
    file_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,35}$")
    file_name: Annotated[str, Field(min_length=1, max_length=255)]
    media_type: Annotated[str, Field(max_length=127)]
    size: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class ReadReceipt(ThreadEvent):
    item: Literal["solution", "document"]
    document_id: Annotated[str | None, Field(min_length=1, max_length=36)] = None
    read_at: datetime


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    ORDER_PLACED: OrderState,
    ORDER_UPDATED: OrderState,
    ORDER_CANCELLED: OrderCancelled,
    PRODUCT_CREATED: ProductState,
    PRODUCT_UPDATED: ProductState,
    PRODUCT_ARCHIVED: ProductState,
    MESSAGE_POSTED: CustomerMessage,
    FILE_ATTACHED: CustomerFile,
    READ_RECEIPT: ReadReceipt,
}

# Every one of these is order-intake's to publish (its contract, docs/events).
SOURCES: dict[str, str] = published_by("order-intake", *PAYLOAD_MODELS)
