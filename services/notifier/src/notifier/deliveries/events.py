"""The notifier's view of order-intake's order events: passed on to the webhooks that ask for them.

Nobody is alerted by these (staff hear of an order when its case opens); they are read only so
an integrator's webhook can follow an order from the start. Tolerant readers, never
order-intake's code: only what identifies the order is checked, the event goes out as it came.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from casebridge_shared.events import EventReader, published_by

ORDER_PLACED = "casebridge.orders.order-placed.v1"
ORDER_UPDATED = "casebridge.orders.order-updated.v1"
ORDER_CANCELLED = "casebridge.orders.order-cancelled.v1"
ORDER_COMPLETED = "casebridge.orders.order-completed.v1"

# The order's thread: what the customer wrote, and what they opened (the solution, a document).
ORDER_MESSAGE_POSTED = "casebridge.orders.message-posted.v1"
ORDER_READ_RECEIPT = "casebridge.orders.read-receipt.v1"

ORDER_STATE_EVENTS = (ORDER_PLACED, ORDER_UPDATED, ORDER_CANCELLED, ORDER_COMPLETED)
ORDER_THREAD_EVENTS = (ORDER_MESSAGE_POSTED, ORDER_READ_RECEIPT)
ORDER_EVENTS = (*ORDER_STATE_EVENTS, *ORDER_THREAD_EVENTS)


class OrderEvent(EventReader):
    # order-intake's API limits (as customer-ledger's reader): longer only from a broken or
    # forged producer, which is dead-lettered rather than sent to an integrator.
    order_id: Annotated[str, Field(min_length=1, max_length=36)]
    status: Annotated[str, Field(max_length=32)]
    version: int


class OrderThreadEvent(EventReader):
    """A thread event: which order (and customer) it is about; the rest goes out as it came."""

    order_id: Annotated[str, Field(min_length=1, max_length=36)]
    customer_id: Annotated[str, Field(min_length=1, max_length=36)]


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    **dict.fromkeys(ORDER_STATE_EVENTS, OrderEvent),
    **dict.fromkeys(ORDER_THREAD_EVENTS, OrderThreadEvent),
}

# Order events are order-intake's to publish (its contract, docs/events).
SOURCES: dict[str, str] = published_by("order-intake", *PAYLOAD_MODELS)
