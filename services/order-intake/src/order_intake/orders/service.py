"""Ordering, the customer's own view, changes and cancellation (A2, A3, A8). No HTTP here."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, func
from sqlalchemy import select as select_columns
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import STAFF_ROLES, Principal, Role
from casebridge_shared.currency import money
from casebridge_shared.db import new_id, notify_at_commit, one_of, table_of, transaction_scoped, utcnow
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.idempotency import body_hash, check_same_request
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.pagination import KeyPart, Keyset, PageParams
from casebridge_shared.problems import Conflict, Forbidden, NotFound
from casebridge_shared.versioning import check_version
from order_intake.catalog.models import Product
from order_intake.catalog.service import is_orderable
from order_intake.identity.models import User
from order_intake.orders import events
from order_intake.orders.models import (
    CUSTOMER_CANCELLABLE,
    FINAL_STATUSES,
    IdempotencyKey,
    Order,
    OrderCreate,
    OrderProgress,
    OrderRead,
    OrderStatus,
    OrderUpdate,
    ProductSnapshot,
    ProgressEntry,
    Solution,
)

orders = table_of(Order)
order_progress = table_of(OrderProgress)
users = table_of(User)
products = table_of(Product)


# PostgreSQL NOTIFY channel: an order's page changed (the api's live order streams listen).
ORDER_CHANGES_CHANNEL = "casebridge_order_changes"


def order_changed(session: AsyncSession, order: Order, *, now: datetime | None = None) -> None:
    """Whatever the customer sees on the order's page changed (status, timeline, documents, messages).

    Touches ``updated_at`` (what the live stream compares, orders/live.py) and wakes the streams of
    every api process at commit. Callers that change ``version`` too need nothing else.
    """
    at = now or utcnow()
    # Never the same instant twice (another process's clock may be behind): the stream must see a change.
    order.updated_at = at if at > order.updated_at else order.updated_at + timedelta(microseconds=1)
    session.add(order)
    notify_at_commit(session, ORDER_CHANGES_CHANNEL)


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
    return await _earlier_order(session, record.request_hash, record.order_id, request_hash)


async def _earlier_order(
    session: AsyncSession, used_with: str, order_id: str, request_hash: str
) -> Order | None:
    """The order an Idempotency-Key was first used for, if this request is the same one."""
    check_same_request(used_with, request_hash, "request")
    return await session.get(Order, order_id)


ORDER_RECEIVED = "Order received"

_CUSTOMER_COLUMNS = (users.c.active, users.c.full_name, users.c.email, users.c.phone)
_PRODUCT_COLUMNS = (
    products.c.id.label("product_id"),
    products.c.title,
    products.c.description,
    products.c.deliverables,
    products.c.category,
    products.c.price,
    products.c.currency,
    products.c.version,
    products.c.active.label("product_active"),
    products.c.archived_at,
)
# Built once: a statement object keeps its cache key, so each order only binds values.
# The customer and the product in one statement (one trip to the database): the
# product's columns are NULL when there is no such product.
_CUSTOMER_AND_PRODUCT = (
    select_columns(*_CUSTOMER_COLUMNS, *_PRODUCT_COLUMNS)
    .select_from(users.outerjoin(products, products.c.id == bindparam("product_id")))
    .where(users.c.id == bindparam("customer_id"))
)


_KEYS = table_of(IdempotencyKey)


@functools.cache
def _batch_statements(dialect: str) -> tuple[Select[Any], Select[Any], Select[Any]]:
    """A batch's look-ups of customers, products and keys (``one_of``: one array on PostgreSQL)."""
    customers = select_columns(users.c.id, *_CUSTOMER_COLUMNS).where(one_of(users.c.id, "ids", dialect))
    products_ = select_columns(*_PRODUCT_COLUMNS).where(one_of(products.c.id, "ids", dialect))
    keys = select_columns(_KEYS.c.customer_id, _KEYS.c.key, _KEYS.c.request_hash, _KEYS.c.order_id).where(
        one_of(_KEYS.c.key, "keys", dialect)
    )
    return customers, products_, keys


@dataclass(frozen=True)
class OrderLookUps:
    """What placing one order looks up: its customer, its product, its Idempotency-Key."""

    customer_id: str
    product_id: str
    idempotency_key: str | None


@dataclass(frozen=True)
class _CustomerAndProduct:
    """The columns of ``_CUSTOMER_AND_PRODUCT``'s row (product ones None: no such product)."""

    active: bool
    full_name: str
    email: str
    phone: str | None
    product_id: str | None = None
    title: str = ""
    description: str = ""
    deliverables: list[str] = field(default_factory=list)
    category: str = ""
    price: Any = None
    currency: str = ""
    version: int = 0
    product_active: bool = False
    archived_at: datetime | None = None


@dataclass
class _Batch:
    """A shared transaction's look-ups for all of its orders (``look_up_for_orders``)."""

    asked: set[OrderLookUps] = field(default_factory=set)
    customers: dict[str, Any] = field(default_factory=dict)
    products: dict[str, Any] = field(default_factory=dict)
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def customer_and_product(self, customer_id: str, product_id: str) -> _CustomerAndProduct | None:
        """What ``_CUSTOMER_AND_PRODUCT`` gives for this pair, from the batch's look-ups."""
        customer = self.customers.get(customer_id)
        if customer is None:
            return None
        product = self.products.get(product_id)
        person = {name: value for name, value in customer._mapping.items() if name != "id"}
        return _CustomerAndProduct(**person, **(product._mapping if product is not None else {}))


def _batch(uow: UnitOfWork) -> _Batch:
    return transaction_scoped(uow.session, "order_intake.orders.batch", _Batch)


async def look_up_for_orders(uow: UnitOfWork, needs: list[OrderLookUps]) -> None:
    """The customers, products and Idempotency-Keys of a shared transaction's orders, at once.

    Each order would look up its own in the transaction that holds SQLite's write
    lock: one statement and one hand-over to the database thread per order while
    every other writer of the file waits. Read here in the same transaction, so
    what each order sees is what it saw before. One order: its own look-up (one
    statement joining customer and product) is cheaper.
    """
    if len(needs) < 2:
        return
    batch = _batch(uow)
    connection = await uow.session.connection()
    customers, products_, keys_used = _batch_statements(connection.dialect.name)
    customer_ids = sorted({n.customer_id for n in needs})
    product_ids = sorted({n.product_id for n in needs})
    batch.customers.update(
        (row.id, row) for row in await connection.execute(customers, {"ids": customer_ids})
    )
    batch.products.update(
        (row.product_id, row) for row in await connection.execute(products_, {"ids": product_ids})
    )
    keys = sorted({n.idempotency_key for n in needs if n.idempotency_key is not None})
    if keys:
        wanted = set(customer_ids)
        for row in await connection.execute(keys_used, {"keys": keys}):
            if row.customer_id in wanted:
                batch.keys[(row.customer_id, row.key)] = (row.request_hash, row.order_id)
    batch.asked.update(needs)


async def place_order(
    uow: UnitOfWork, principal: Principal, data: OrderCreate, idempotency_key: str | None
) -> tuple[OrderRead, bool]:
    """Store the order with a snapshot of the product, and commit; returns (order, replayed)."""
    try:
        placed = await order_placed_in(uow, principal, data, idempotency_key)
        await uow.commit()
    except IntegrityError as error:
        await uow.rollback()
        return await _after_lost_race(uow, principal, data, idempotency_key, error)
    return placed


async def place_order_with_others(
    writes: GroupCommit, principal: Principal, data: OrderCreate, idempotency_key: str | None
) -> tuple[OrderRead, bool]:
    """``place_order`` in a transaction shared with the orders placed at the same moment."""
    needs = OrderLookUps(principal.subject, data.product_id, idempotency_key)
    try:
        return await writes.run(
            lambda uow: order_placed_in(uow, principal, data, idempotency_key), needs=needs
        )
    except IntegrityError as error:
        lost = error
    return await writes.run(lambda uow: _after_lost_race(uow, principal, data, idempotency_key, lost))


async def _after_lost_race(
    uow: UnitOfWork,
    principal: Principal,
    data: OrderCreate,
    idempotency_key: str | None,
    error: IntegrityError,
) -> tuple[OrderRead, bool]:
    """The insert failed: if a concurrent request with the same key won, answer with its order."""
    if idempotency_key is None:
        raise error
    previous = await _replayed(uow.session, principal.subject, idempotency_key, body_hash(data))
    if previous is None:
        raise error
    return await read_order(uow.session, previous), True


async def order_placed_in(
    uow: UnitOfWork, principal: Principal, data: OrderCreate, idempotency_key: str | None
) -> tuple[OrderRead, bool]:
    """The order stored in ``uow`` (the caller commits); returns (order, replayed).

    Core statements rather than ORM objects: one look-up on the session's
    connection, and the order and its first progress entry written at commit
    with the event (``insert_at_commit``). A new order is written once and not
    touched again in this transaction, and the ORM's identity map, loading and
    flush bookkeeping were a large part of the request's CPU (see ADR-0009).
    """
    # Only a retry-safe order needs its request's fingerprint.
    request_hash = body_hash(data) if idempotency_key is not None else ""
    batch = _batch(uow)
    looked_up = OrderLookUps(principal.subject, data.product_id, idempotency_key) in batch.asked
    if idempotency_key is not None:
        if looked_up:
            used = batch.keys.get((principal.subject, idempotency_key))
            previous = None if used is None else await _earlier_order(uow.session, *used, request_hash)
        else:
            previous = await _replayed(uow.session, principal.subject, idempotency_key, request_hash)
        if previous is not None:
            return await read_order(uow.session, previous), True
    found: Any
    if looked_up:
        found = batch.customer_and_product(principal.subject, data.product_id)
    else:
        connection = await uow.session.connection()
        found = (
            await connection.execute(
                _CUSTOMER_AND_PRODUCT, {"customer_id": principal.subject, "product_id": data.product_id}
            )
        ).first()
    if found is None or not found.active:
        raise Forbidden("your account is not active")
    if found.product_id is None:
        raise NotFound(f"no product {data.product_id}", field="body.product_id")
    if not is_orderable(active=found.product_active, archived=found.archived_at is not None):
        raise Conflict("this product cannot be ordered at the moment", field="body.product_id")
    now = utcnow()
    contact = events.CustomerContactData(
        customer_id=principal.subject,
        full_name=found.full_name,
        email=found.email,
        phone=found.phone,
    )
    snapshot = events.ProductSnapshotData(
        product_id=data.product_id,
        title=found.title,
        description=found.description,
        deliverables=list(found.deliverables),
        category=found.category,
        price=money(found.price, found.currency),
        currency=found.currency,
        version=found.version,
    )
    placed = events.OrderPlaced(
        order_id=new_id(),
        customer=contact,
        product=snapshot,
        description=data.description,
        status=OrderStatus.SUBMITTED,
        version=1,
        created_at=now,
        updated_at=now,
    )
    received = ProgressEntry(at=now, status=placed.status, title=ORDER_RECEIVED, detail=None)
    event = uow.emit(placed, key=placed.order_id, version=placed.version)
    uow.insert_at_commit(
        orders,
        {
            "id": placed.order_id,
            "customer_id": contact.customer_id,
            # The event's own JSON of the snapshots: the same values, serialised once.
            "customer": event.data["customer"],
            "product_id": snapshot.product_id,
            "product": event.data["product"],
            "description": placed.description,
            "status": placed.status,
            "version": placed.version,
            "created_at": now,
            "updated_at": now,
        },
    )
    uow.insert_at_commit(order_progress, {"order_id": placed.order_id, **received.model_dump()})
    if idempotency_key is not None:
        uow.session.add(
            IdempotencyKey(
                customer_id=principal.subject,
                key=idempotency_key,
                request_hash=request_hash,
                order_id=placed.order_id,
            )
        )
    order = OrderRead(
        id=placed.order_id,
        customer_id=contact.customer_id,
        product=ProductSnapshot.model_validate(event.data["product"]),
        description=placed.description,
        status=OrderStatus.SUBMITTED,
        version=placed.version,
        created_at=now,
        updated_at=now,
        cancelled_at=None,
        cancel_reason=None,
        progress=[received],
        solution=None,
    )
    return order, False


async def read_order(session: AsyncSession, order: Order) -> OrderRead:
    """What the customer (or staff) sees of an order: its snapshot, progress and solution."""
    progress = await progress_of(session, order.id)
    solution = None
    if order.solution_summary is not None and order.solution_at is not None:
        solution = Solution(summary=order.solution_summary, text=order.solution_text, at=order.solution_at)
    return OrderRead(
        id=order.id,
        customer_id=order.customer_id,
        product=ProductSnapshot.model_validate(order.product),
        description=order.description,
        status=OrderStatus(order.status),
        version=order.version,
        created_at=order.created_at,
        updated_at=order.updated_at,
        cancelled_at=order.cancelled_at,
        cancel_reason=order.cancel_reason,
        progress=[ProgressEntry.model_validate(p) for p in progress],
        solution=solution,
    )


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


# Newest first; the id breaks ties between orders placed in the same microsecond.
ORDER_KEYSET = Keyset(KeyPart(col(Order.created_at), datetime, descending=True), KeyPart(col(Order.id), str))


async def list_orders(
    session: AsyncSession,
    principal: Principal,
    *,
    status: OrderStatus | None,
    product_id: str | None,
    customer_id: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    page: PageParams,
) -> tuple[list[Order], int, str | None]:
    """A page of the orders the principal may see, newest first, the total and the next cursor."""
    query = select(Order)
    if not can_see_all_orders(principal):
        query = query.where(Order.customer_id == principal.subject)
    elif customer_id:
        query = query.where(Order.customer_id == customer_id)
    if status is not None:
        query = query.where(Order.status == status)
    if product_id:
        query = query.where(Order.product_id == product_id)
    if created_from is not None:
        query = query.where(col(Order.created_at) >= created_from)
    if created_to is not None:
        query = query.where(col(Order.created_at) < created_to)
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = list((await session.exec(ORDER_KEYSET.window(query, page))).all())
    items, next_cursor = ORDER_KEYSET.cut(rows, page, lambda o: (o.created_at, o.id))
    return items, int(total), next_cursor


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
    if order.status != OrderStatus.SUBMITTED:
        raise Conflict(
            f"the order can only be changed while submitted; it is {order.status}",
            state=order.status,
        )
    if data.description == order.description:
        return order
    now = utcnow()
    order.description = data.description
    order.version += 1
    order_changed(uow.session, order, now=now)
    uow.session.add(
        OrderProgress(order_id=order.id, at=now, status=order.status, title="Description updated")
    )
    uow.emit(events.OrderUpdated(**_state(order)), key=order.id, version=order.version)
    await uow.commit()
    return order


def publish_completed(uow: UnitOfWork, order: Order) -> None:
    """The order's case was closed (progress.service): its state as ``order-completed``.

    In the transaction that made the order ``completed``, so the ledger's demand
    is ``met`` exactly when the customer sees the order completed.
    """
    uow.emit(events.OrderCompleted(**_state(order)), key=order.id, version=order.version)


def publish_cancelled_by_staff(uow: UnitOfWork, order: Order, reason: str | None) -> None:
    """The order's case was cancelled by staff (progress.service): ``order-cancelled``."""
    uow.emit(
        events.OrderCancelled(**_state(order), reason=reason, cancelled_by="staff"),
        key=order.id,
        version=order.version,
    )


def check_cancellable(status: OrderStatus, *, by_staff: bool) -> bool:
    """Whether cancelling an order in ``status`` changes it: False when it is cancelled already.

    Raises 409 for a completed order, and for a customer once work has started (staff may
    still cancel it then). Who may see the order at all is decided before (cancel_order).
    """
    if status is OrderStatus.CANCELLED:
        return False
    if status in FINAL_STATUSES:
        raise Conflict(f"a {status} order cannot be cancelled", state=status)
    if not by_staff and status not in CUSTOMER_CANCELLABLE:
        raise Conflict(f"work on this order has started ({status}); contact us to cancel it", state=status)
    return True


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
    if not check_cancellable(OrderStatus(order.status), by_staff=is_staff):
        return order  # cancelling twice changes nothing
    now = utcnow()
    order.status = OrderStatus.CANCELLED
    order.cancelled_at = now
    order.cancel_reason = reason
    order.version += 1
    order_changed(uow.session, order, now=now)
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
