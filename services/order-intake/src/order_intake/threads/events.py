"""Thread events on ``casebridge.orders.v1`` (key: order id): what the customer wrote, attached
and read, so case-handling learns it while order-intake is down and the other way round."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from casebridge_shared.events import ORDERS_TOPIC, EventPayload


class _ThreadEvent(EventPayload):
    topic = ORDERS_TOPIC

    order_id: str
    customer_id: str
    at: datetime


class CustomerMessagePosted(_ThreadEvent):
    event_type = "casebridge.orders.message-posted.v1"
    summary = "The customer wrote a message on their order to the team handling it."
    message_id: str
    author_name: str | None
    body: str


class FileAttached(_ThreadEvent):
    event_type = "casebridge.orders.file-attached.v1"
    summary = (
        "The customer attached a file to their order; case-handling fetches the content from "
        "order-intake (GET /orders/{order_id}/files/{file_id}, service token) and checks its SHA-256."
    )
    file_id: str
    file_name: str
    media_type: str
    size: int
    sha256: str


class ReadReceiptRecorded(_ThreadEvent):
    event_type = "casebridge.orders.read-receipt.v1"
    summary = "The customer opened the solution or a document for the first time."
    item: Literal["solution", "document"]
    document_id: str | None
    read_at: datetime
