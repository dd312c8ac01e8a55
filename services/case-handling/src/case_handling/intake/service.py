"""Applying order-intake's events: orders become cases, the catalog is copied (A4, A5)."""

from __future__ import annotations

from case_handling.cases import service as cases
from case_handling.intake.events import (
    ORDER_CANCELLED,
    ORDER_PLACED,
    ORDER_UPDATED,
    PRODUCT_ARCHIVED,
    PRODUCT_CREATED,
    PRODUCT_UPDATED,
    OrderCancelled,
    OrderState,
    ProductState,
)
from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import Handler
from casebridge_shared.outbox import UnitOfWork


async def order_placed(uow: UnitOfWork, event: CloudEvent, order: OrderState) -> None:
    await cases.open_case(uow, order, event.aggregateversion)


async def order_updated(uow: UnitOfWork, event: CloudEvent, order: OrderState) -> None:
    await cases.update_from_order(uow, order, event.aggregateversion)


async def order_cancelled(uow: UnitOfWork, event: CloudEvent, order: OrderCancelled) -> None:
    await cases.cancel_from_order(uow, order, event.aggregateversion)


async def product_changed(uow: UnitOfWork, event: CloudEvent, product: ProductState) -> None:
    await cases.upsert_product(uow, product)


HANDLERS: dict[str, Handler] = {
    ORDER_PLACED: order_placed,
    ORDER_UPDATED: order_updated,
    ORDER_CANCELLED: order_cancelled,
    PRODUCT_CREATED: product_changed,
    PRODUCT_UPDATED: product_changed,
    PRODUCT_ARCHIVED: product_changed,
}
