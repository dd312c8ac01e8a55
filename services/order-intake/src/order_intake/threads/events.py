"""Thread events on ``casebridge.orders.v1`` (key: order id): what the customer wrote, attached
and read, so case-handling learns it while order-intake is down and the other way round."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from casebridge_shared.classification import INTERNAL, PERSONAL, PSEUDONYMOUS, SENSITIVE_PERSONAL
from casebridge_shared.events import ORDERS_TOPIC, EventPayload


class _ThreadEvent(EventPayload):
    topic = ORDERS_TOPIC

    order_id: Annotated[str, INTERNAL]
    customer_id: Annotated[str, PSEUDONYMOUS]
    at: Annotated[datetime, INTERNAL]


class CustomerMessagePosted(_ThreadEvent):
    event_type = "casebridge.orders.message-posted.v1"
    summary = "The customer wrote a message on their order to the team handling it."
    message_id: Annotated[str, INTERNAL]
    author_name: Annotated[str | None, PERSONAL]
    body: Annotated[str, SENSITIVE_PERSONAL]


class FileAttached(_ThreadEvent):
    event_type = "casebridge.orders.file-attached.v1"
    summary = (
        "The customer attached a file to their order; case-handling fetches the content from "
        "order-intake (GET /orders/{order_id}/files/{file_id}, service token) and checks its SHA-256."
    )
    file_id: Annotated[str, INTERNAL]
    file_name: Annotated[str, SENSITIVE_PERSONAL]
    media_type: Annotated[str, INTERNAL]
    size: Annotated[int, INTERNAL]
    sha256: Annotated[str, INTERNAL]


class ReadReceiptRecorded(_ThreadEvent):
    event_type = "casebridge.orders.read-receipt.v1"
    summary = "The customer opened the solution or a document for the first time."
    item: Annotated[Literal["solution", "document"], INTERNAL]
    document_id: Annotated[str | None, INTERNAL]
    read_at: Annotated[datetime, INTERNAL]
