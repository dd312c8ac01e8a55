"""Applying order-intake's events: orders become cases, the catalog is copied (A4, A5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
}
