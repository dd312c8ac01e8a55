"""Ordering, the customer's own view, changes and cancellation (A2, A3, A8). No HTTP here."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import STAFF_ROLES, Principal, Role
from casebridge_shared.currency import money
from casebridge_shared.db import utcnow
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict, Forbidden, NotFound, Unprocessable
from casebridge_shared.versioning import check_version
from order_intake.catalog.models import Product
from order_intake.identity.models import User
from order_intake.orders import events
from order_intake.orders.models import (
    CUSTOMER_CANCELLABLE,
    FINAL_STATUSES,
    IdempotencyKey,
    Order,
    OrderCreate,
    OrderProgress,
    OrderStatus,
    OrderUpdate,
)


def _state(order: Order) -> dict[str, object]:
    return {
        "order_id": order.id,
        "customer": events.CustomerContactData(**order.customer),
        "product": events.ProductSnapshotData(**order.product),
        "description": order.description,
        "status": order.status,
        "version": order.version,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def _request_hash(data: OrderCreate) -> str:
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def can_see_all_orders(principal: Principal) -> bool:
    return principal.has_any(STAFF_ROLES)


async def _replayed(session: AsyncSession, customer_id: str, key: str, request_hash: str) -> Order | None:
    record = (
        await session.exec(
            select(IdempotencyKey).where(IdempotencyKey.customer_id == customer_id, IdempotencyKey.key == key)
        )
    ).first()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise Unprocessable(
            "this Idempotency-Key was already used with a different request",
            field="header.Idempotency-Key",
        )
    return await session.get(Order, record.order_id)


async def place_order(
    uow: UnitOfWork, principal: Principal, data: OrderCreate, idempotency_key: str | None
) -> tuple[Order, bool]:
    """Store the order with a snapshot of the product; returns (order, replayed)."""
    request_hash = _request_hash(data)
    if idempotency_key is not None:
        previous = await _replayed(uow.session, principal.subject, idempotency_key, request_hash)
        if previous is not None:
            return previous, True
    customer = await uow.session.get(User, principal.subject)
    if customer is None or not customer.active:
        raise Forbidden("your account is not active")
    product = await uow.session.get(Product, data.product_id)
    if product is None:
        raise NotFound(f"no product {data.product_id}", field="body.product_id")
    if not product.active or product.archived:
        raise Conflict("this product cannot be ordered at the moment", field="body.product_id")
    now = utcnow()
    order = Order(
        customer_id=customer.id,
        customer={
            "customer_id": customer.id,
            "full_name": customer.full_name,
            "email": customer.email,
            "phone": customer.phone,
        },
        product_id=product.id,
        product={
            "product_id": product.id,
            "title": product.title,
            "description": product.description,
            "deliverables": list(product.deliverables),
            "category": product.category,
            "price": str(money(product.price, product.currency)),
            "currency": product.currency,
            "version": product.version,
        },
        description=data.description,
        created_at=now,
        updated_at=now,
    )
    uow.session.add(order)
    uow.session.add(new_order_progress(order)[0])
    if idempotency_key is not None:
        uow.session.add(
            IdempotencyKey(
                customer_id=customer.id,
                key=idempotency_key,
                request_hash=request_hash,
                order_id=order.id,
            )
        )
    uow.emit(events.OrderPlaced(**_state(order)), key=order.id, version=order.version)
    try:
        await uow.commit()
    except IntegrityError:
        # A concurrent request with the same key won: answer with its order.
        await uow.rollback()
        if idempotency_key is None:
            raise
        previous = await _replayed(uow.session, principal.subject, idempotency_key, request_hash)
        if previous is None:
            raise
        return previous, True
    return order, False


def new_order_progress(order: Order) -> list[OrderProgress]:
    """The progress timeline of an order just placed."""
    return [
        OrderProgress(order_id=order.id, at=order.created_at, status=order.status, title="Order received")
    ]


async def get_order(session: AsyncSession, principal: Principal, order_id: str) -> Order:
    order = await session.get(Order, order_id)
    # Someone else's order looks exactly like a missing one.
    if order is None or (not can_see_all_orders(principal) and order.customer_id != principal.subject):
        raise NotFound(f"no order {order_id}")
    return order


async def progress_of(session: AsyncSession, order_id: str) -> list[OrderProgress]:
    rows = await session.exec(
        select(OrderProgress)
        .where(OrderProgress.order_id == order_id)
        .order_by(col(OrderProgress.at), col(OrderProgress.id))
    )
    return list(rows.all())


async def list_orders(
    session: AsyncSession,
    principal: Principal,
    *,
    status: OrderStatus | None,
    product_id: str | None,
    customer_id: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Order], int]:
    query = select(Order)
    if not can_see_all_orders(principal):
        query = query.where(Order.customer_id == principal.subject)
    elif customer_id:
        query = query.where(Order.customer_id == customer_id)
    if status is not None:
        query = query.where(Order.status == status.value)
    if product_id:
        query = query.where(Order.product_id == product_id)
    if created_from is not None:
        query = query.where(col(Order.created_at) >= created_from)
    if created_to is not None:
        query = query.where(col(Order.created_at) < created_to)
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = await session.exec(
        query.order_by(col(Order.created_at).desc(), col(Order.id)).limit(limit).offset(offset)
    )
    return list(rows.all()), int(total)


async def update_order(
    uow: UnitOfWork,
    principal: Principal,
    order_id: str,
    data: OrderUpdate,
    expected_version: int | None,
) -> Order:
    order = await get_order(uow.session, principal, order_id)
    if order.customer_id != principal.subject:
        raise Forbidden("only the customer who placed the order may change it")
    check_version(order.version, expected_version)
    if order.status != OrderStatus.SUBMITTED.value:
        raise Conflict(
            f"the order can only be changed while submitted; it is {order.status}",
            state=order.status,
        )
    if data.description == order.description:
        return order
    now = utcnow()
    order.description = data.description
    order.version += 1
    order.updated_at = now
    uow.session.add(order)
    uow.session.add(
        OrderProgress(order_id=order.id, at=now, status=order.status, title="Description updated")
    )
    uow.emit(events.OrderUpdated(**_state(order)), key=order.id, version=order.version)
    await uow.commit()
    return order


async def cancel_order(
    uow: UnitOfWork,
    principal: Principal,
    order_id: str,
    reason: str | None,
    expected_version: int | None,
) -> Order:
    order = await get_order(uow.session, principal, order_id)
    is_owner = order.customer_id == principal.subject
    is_staff = can_see_all_orders(principal)
    if not is_owner and not is_staff:
        raise NotFound(f"no order {order_id}")
    check_version(order.version, expected_version)
    status = OrderStatus(order.status)
    if status is OrderStatus.CANCELLED:
        return order  # cancelling twice changes nothing
    if status in FINAL_STATUSES:
        raise Conflict(f"a {status.value} order cannot be cancelled", state=status.value)
    if not is_staff and status not in CUSTOMER_CANCELLABLE:
        raise Conflict(
            f"work on this order has started ({status.value}); contact us to cancel it",
            state=status.value,
        )
    now = utcnow()
    order.status = OrderStatus.CANCELLED.value
    order.cancelled_at = now
    order.cancel_reason = reason
    order.version += 1
    order.updated_at = now
    uow.session.add(order)
    uow.session.add(
        OrderProgress(
            order_id=order.id,
            at=now,
            status=order.status,
            title="Order cancelled",
            detail=reason,
        )
    )
    cancelled_by = Role.CUSTOMER.value if is_owner else "staff"
    uow.emit(
        events.OrderCancelled(**_state(order), reason=reason, cancelled_by=cancelled_by),
        key=order.id,
        version=order.version,
    )
    await uow.commit()
    return order
