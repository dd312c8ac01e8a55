"""Applying order-intake's events: orders become cases, the catalog is copied (A4, A5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from case_handling.cases import service as cases
from case_handling.intake.events import (
    FILE_ATTACHED,
    MESSAGE_POSTED,
    ORDER_CANCELLED,
    ORDER_PLACED,
    ORDER_UPDATED,
    PRODUCT_ARCHIVED,
    PRODUCT_CREATED,
    PRODUCT_UPDATED,
    READ_RECEIPT,
    CustomerFile,
    CustomerMessage,
    OrderCancelled,
    OrderState,
    ProductState,
    ReadReceipt,
)
from case_handling.threads import service as threads
from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import Handler, PoisonEvent
from casebridge_shared.outbox import UnitOfWork


async def order_placed(uow: UnitOfWork, event: CloudEvent, order: OrderState) -> None:
    await cases.open_case(uow, order, event.aggregateversion)


async def _fits_the_order_s_history(uow: UnitOfWork, event: CloudEvent, order: OrderState) -> None:
    """An update or cancellation needs the order placed before it, by the same customer.

    A correct producer publishes an order's events in order on one partition, so
    ``order-placed`` was applied (in this run or before) when a later event of the
    order comes; a replay delivers them in that order again. Anything else is not
    opened as a case: it goes to the dead-letter topic with the reason. If the
    placed event was itself dead-lettered, replaying the dead letters in order
    (oldest first) applies both.
    """
    what = event.type.rsplit(".", 2)[-2]
    case = await cases.case_for_order(uow, order.order_id)
    if case is None:
        raise PoisonEvent(
            f"does not fit the order's history: {what} for order {order.order_id}, "
            "which was never placed here (no case for it)"
        )
    if case.customer_id != order.customer.customer_id:
        raise PoisonEvent(
            f"does not fit the order's history: {what} for order {order.order_id} of customer "
            f"{order.customer.customer_id}, but it was placed by customer {case.customer_id}"
        )


async def order_updated(uow: UnitOfWork, event: CloudEvent, order: OrderState) -> None:
    await _fits_the_order_s_history(uow, event, order)
    await cases.update_from_order(uow, order, event.aggregateversion)


async def order_cancelled(uow: UnitOfWork, event: CloudEvent, order: OrderCancelled) -> None:
    await _fits_the_order_s_history(uow, event, order)
    await cases.cancel_from_order(uow, order, event.aggregateversion)


async def product_changed(uow: UnitOfWork, event: CloudEvent, product: ProductState) -> None:
    await cases.upsert_product(uow, product)


async def message_posted(uow: UnitOfWork, event: CloudEvent, message: CustomerMessage) -> None:
    await threads.customer_message(uow, message)


async def file_attached(uow: UnitOfWork, event: CloudEvent, announced: CustomerFile) -> None:
    await threads.customer_file(uow, announced)


async def read_receipt(uow: UnitOfWork, event: CloudEvent, receipt: ReadReceipt) -> None:
    await threads.read_receipt(uow, receipt)


async def before_run(uow: UnitOfWork, run: Sequence[tuple[CloudEvent, Any]]) -> None:
    """The cases of the run's orders, found in one query before its events are applied."""
    order_ids = [payload.order_id for _, payload in run if isinstance(payload, OrderState)]
    if order_ids:
        await cases.look_up_cases_for_orders(uow, order_ids)


HANDLERS: dict[str, Handler] = {
    ORDER_PLACED: order_placed,
    ORDER_UPDATED: order_updated,
    ORDER_CANCELLED: order_cancelled,
    PRODUCT_CREATED: product_changed,
    PRODUCT_UPDATED: product_changed,
    PRODUCT_ARCHIVED: product_changed,
    MESSAGE_POSTED: message_posted,
    FILE_ATTACHED: file_attached,
    READ_RECEIPT: read_receipt,
}
