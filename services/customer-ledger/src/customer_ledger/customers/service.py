"""Customer records: registering, reading, changing, hand-off, and the order and case feeds. No HTTP here.

Every read of customer data is journaled with the customers it showed, before
the answer goes out; every change is journaled with its before and after (see
``records``). Writes need an association with the customer (admin excepted):
payments are finance's, progress is finance's and process's (B2, B4), and
associations change only by hand-off or by admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Department, Principal, Role
from casebridge_shared.currency import check_amount, money
from casebridge_shared.db import new_id, utcnow
from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import Handler
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict, Forbidden, NotFound, PayloadTooLarge, Problem, Unprocessable
from casebridge_shared.versioning import check_version
from customer_ledger.customers.events import (
    CASE_EVENTS,
    ORDER_CANCELLED,
    ORDER_COMPLETED,
    ORDER_PLACED,
    ORDER_UPDATED,
    CaseProgress,
    OrderState,
)
from customer_ledger.customers.models import (
    CHAIN,
    Association,
    AssociationCreate,
    Customer,
    CustomerCreate,
    CustomerUpdate,
    Demand,
    DemandCreate,
    DemandToRecord,
    DemandUpdate,
    HandOff,
    Payment,
    PaymentCorrection,
    PaymentCreate,
    PaymentToRecord,
    ProgressCorrection,
    ProgressCreate,
    ProgressEntry,
    ProgressToRecord,
    Recorded,
    Removal,
    ToRecord,
    Why,
)
from customer_ledger.grants.service import (
    customer_for_department,
    customer_in_sight,
    customer_may_see_progress,
    department_of,
    is_associated,
    table_access,
)
from customer_ledger.records import Actor, dump, record_change, record_read

# The tables under a customer, by the name grants use.
CHILD_TABLES: dict[str, type[SQLModel]] = {
    "demands": Demand,
    "associations": Association,
    "progress": ProgressEntry,
    "payments": Payment,
}
# Who may add rows to a table besides admin (None: any associated department).
WRITERS: dict[str, frozenset[str] | None] = {
    "customers": None,
    "demands": None,
    "progress": frozenset({Department.FINANCE.value, Department.PROCESS.value}),
    "payments": frozenset({Department.FINANCE.value}),
    "associations": frozenset(),
}


# --- reading ---------------------------------------------------------------


async def list_customers(
    session: AsyncSession, reader: Principal, *, stage: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    access = await table_access(session, reader, "customers")
    query = select(Customer)
    if not access.everyone and access.department is not None:
        query = query.where(
            col(Customer.id).in_(
                select(Association.customer_id).where(Association.department == access.department)
            )
        )
    if stage:
        query = query.where(Customer.stage == stage)
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = (
        await session.exec(
            query.order_by(col(Customer.full_name), col(Customer.id)).limit(limit).offset(offset)
        )
    ).all()
    await record_read(
        session,
        Actor.of(reader),
        "customers",
        customers=[c.id for c in rows],
        query={"stage": stage, "limit": limit, "offset": offset},
    )
    return access.shape_all([dump(c) for c in rows]), int(total)


async def get_customer(session: AsyncSession, reader: Principal, customer_id: str) -> dict[str, Any]:
    shaped, _version = await read_customer(session, reader, customer_id)
    return shaped


async def read_customer(
    session: AsyncSession, reader: Principal, customer_id: str
) -> tuple[dict[str, Any], int]:
    """The customer as ``reader``'s grant shows it, and its version (the ETag, shown or not)."""
    access = await table_access(session, reader, "customers")
    customer = await customer_in_sight(session, access, customer_id)
    await record_read(session, Actor.of(reader), "customers", customers=[customer_id])
    return access.shape(dump(customer)), customer.version


async def list_of_customer(
    session: AsyncSession, reader: Principal, customer_id: str, table: str
) -> list[dict[str, Any]]:
    access = await table_access(session, reader, table)
    await customer_in_sight(session, access, customer_id)
    model = CHILD_TABLES[table]
    order = col(ProgressEntry.at) if model is ProgressEntry else col(model.id)  # type: ignore[attr-defined]
    rows = (
        await session.exec(select(model).where(model.customer_id == customer_id).order_by(order))  # type: ignore[attr-defined]
    ).all()
    await record_read(session, Actor.of(reader), table, customers=[customer_id])
    return access.shape_all([dump(r) for r in rows])


async def my_progress(session: AsyncSession, customer: Principal) -> list[dict[str, Any]]:
    """A customer's own project progress, once admin granted it (B6)."""
    if Role.CUSTOMER not in customer.roles:
        raise Forbidden("this is a customer's own view")
    if not await customer_may_see_progress(session, customer.subject):
        raise Forbidden("project progress is not yet open to you; the firm grants it")
    rows = (
        await session.exec(
            select(ProgressEntry)
            .where(ProgressEntry.customer_id == customer.subject)
            .order_by(col(ProgressEntry.at), col(ProgressEntry.id))
        )
    ).all()
    await record_read(session, Actor.of(customer), "progress", customers=[customer.subject])
    return [dump(r) for r in rows]


# --- writing ---------------------------------------------------------------

RowT = TypeVar("RowT", Customer, Demand, ProgressEntry, Payment)
ChildT = TypeVar("ChildT", Demand, ProgressEntry, Payment)


async def _of_customer(
    session: AsyncSession, model: type[ChildT], row_id: str, customer_id: str, what: str
) -> ChildT:
    row = await session.get(model, row_id)
    if row is None or row.customer_id != customer_id:
        raise NotFound(f"no {what} {row_id} of customer {customer_id}")
    return row


def _changes(body: Why) -> dict[str, Any]:
    """The fields a change request sets, without its why."""
    return body.model_dump(exclude_unset=True, exclude={"reason", "feedback_ref"})


async def _writable(session: AsyncSession, writer: Principal, customer_id: str, table: str) -> Customer:
    """The customer, if ``writer`` may add to or change ``table`` of theirs (403/404 otherwise)."""
    if writer.is_admin:
        customer = await session.get(Customer, customer_id)
        if customer is None:
            raise NotFound(f"no customer {customer_id}")
        return customer
    department = department_of(writer)
    if department is None:
        raise Forbidden("only admin and department users change customer records")
    customer, associated = await customer_for_department(session, customer_id, department)
    if customer is None or not associated:
        raise NotFound(f"no customer {customer_id}")
    allowed = WRITERS[table]
    if allowed is not None and department not in allowed:
        raise Forbidden(f"the {department} department does not record {table}")
    return customer


def _writer_name(writer: Principal) -> str:
    return department_of(writer) or ("admin" if writer.is_admin else writer.subject)


async def _associate(
    session: AsyncSession, actor: Actor, customer_id: str, department: str, reason: str
) -> Association | None:
    if await is_associated(session, customer_id, department):
        return None
    association = Association(
        id=new_id(), customer_id=customer_id, department=department, reason=reason[:300], since=utcnow()
    )
    await record_change(
        session,
        actor,
        table="associations",
        operation="insert",
        before=None,
        after=association,
        reason=reason,
    )
    return association


async def create_customer(
    session: AsyncSession, writer: Principal, body: CustomerCreate, *, default_department: str
) -> Customer:
    department = department_of(writer)
    if department is None and not writer.is_admin:
        raise Forbidden("only admin and department users register customers")
    holder = department or default_department
    now = utcnow()
    customer = Customer(
        id=new_id(),
        full_name=body.full_name,
        email=str(body.email) if body.email else None,
        phone=body.phone,
        organisation=body.organisation,
        address=body.address,
        stage=holder,
        created_at=now,
        updated_at=now,
    )
    actor = Actor.of(writer)
    await record_change(session, actor, table="customers", operation="insert", before=None, after=customer)
    await _associate(session, actor, customer.id, holder, f"registered by {_writer_name(writer)}")
    return customer


async def _update(
    session: AsyncSession,
    actor: Actor,
    table: str,
    row: RowT,
    changes: dict[str, Any],
    *,
    reason: str | None,
    feedback_ref: str | None,
) -> RowT:
    """Journal ``row`` with ``changes`` applied, unless nothing changes. Returns the row as it is now."""
    before = dump(row)
    after = type(row).model_validate({**before, **changes})
    if dump(after) == before:
        return row
    if isinstance(after, Customer | Demand | ProgressEntry | Payment):
        after.version = int(before["version"]) + 1
    if isinstance(after, Customer):
        after.updated_at = utcnow()
    if isinstance(after, Demand):
        after.updated_at = utcnow()
    snapshot = type(row).model_validate(before)
    await record_change(
        session,
        actor,
        table=table,
        operation="update",
        before=snapshot,
        after=after,
        reason=reason,
        feedback_ref=feedback_ref,
    )
    return after


async def update_customer(
    session: AsyncSession,
    writer: Principal,
    customer_id: str,
    body: CustomerUpdate,
    expected_version: int | None = None,
) -> Customer:
    customer = await _writable(session, writer, customer_id, "customers")
    check_version(customer.version, expected_version)
    changes = _changes(body)
    if "email" in changes and changes["email"] is not None:
        changes["email"] = str(changes["email"])
    return await _update(
        session,
        Actor.of(writer),
        "customers",
        customer,
        changes,
        reason=body.reason,
        feedback_ref=body.feedback_ref,
    )


async def hand_off(
    session: AsyncSession,
    writer: Principal,
    customer_id: str,
    body: HandOff,
    expected_version: int | None = None,
) -> Customer:
    """Move the customer along sales → finance → process → technical → after_sales (B2).

    The department holding the customer moves it to the next one, which becomes
    associated; any other move (a skip, backwards, by someone else) is admin's.
    """
    customer = await _writable(session, writer, customer_id, "customers")
    check_version(customer.version, expected_version)
    current = Department(customer.stage)
    position = CHAIN.index(current)
    following = CHAIN[position + 1] if position + 1 < len(CHAIN) else None
    target = body.to or following
    if target is None:
        raise Conflict(
            f"{current.value} is the last department; there is no hand-off after it", field="body.to"
        )
    if target == current:
        raise Conflict(f"the customer is with {current.value} already", field="body.to")
    if not writer.is_admin:
        if department_of(writer) != current.value:
            raise Forbidden(f"only {current.value}, which holds the customer, hands them off")
        if target != following:
            raise Forbidden(
                f"{current.value} hands off to {following.value if following else 'nobody'}; "
                f"a move to {target.value} needs admin"
            )
    reason = body.reason or f"hand-off {current.value} → {target.value}"
    actor = Actor.of(writer)
    updated = await _update(
        session,
        actor,
        "customers",
        customer,
        {"stage": target.value},
        reason=reason,
        feedback_ref=body.feedback_ref,
    )
    await _associate(session, actor, customer_id, target.value, reason)
    return updated


async def add_demand(
    session: AsyncSession, writer: Principal, customer_id: str, body: DemandCreate
) -> Demand:
    await _writable(session, writer, customer_id, "demands")
    return await _record_demand(session, writer, customer_id, body)


async def _record_demand(
    session: AsyncSession, writer: Principal, customer_id: str, body: DemandCreate
) -> Demand:
    now = utcnow()
    demand = Demand(
        id=new_id(),
        customer_id=customer_id,
        title=body.title,
        description=body.description,
        category=body.category,
        status="open",
        registered_by=_writer_name(writer),
        created_at=now,
        updated_at=now,
    )
    await record_change(
        session, Actor.of(writer), table="demands", operation="insert", before=None, after=demand
    )
    return demand


async def update_demand(
    session: AsyncSession,
    writer: Principal,
    customer_id: str,
    demand_id: str,
    body: DemandUpdate,
    expected_version: int | None = None,
) -> Demand:
    await _writable(session, writer, customer_id, "demands")
    demand = await _of_customer(session, Demand, demand_id, customer_id, "demand")
    check_version(demand.version, expected_version)
    return await _update(
        session,
        Actor.of(writer),
        "demands",
        demand,
        _changes(body),
        reason=body.reason,
        feedback_ref=body.feedback_ref,
    )


async def add_progress(
    session: AsyncSession, writer: Principal, customer_id: str, body: ProgressCreate
) -> ProgressEntry:
    await _writable(session, writer, customer_id, "progress")
    return await _record_progress(session, writer, customer_id, body)


async def _record_progress(
    session: AsyncSession, writer: Principal, customer_id: str, body: ProgressCreate
) -> ProgressEntry:
    entry = ProgressEntry(
        id=new_id(),
        customer_id=customer_id,
        project=body.project,
        stage=body.stage,
        note=body.note,
        department=department_of(writer),
        recorded_by=writer.subject,
        at=utcnow(),
    )
    await record_change(
        session, Actor.of(writer), table="progress", operation="insert", before=None, after=entry
    )
    return entry


async def add_payment(
    session: AsyncSession, writer: Principal, customer_id: str, body: PaymentCreate
) -> Payment:
    await _writable(session, writer, customer_id, "payments")
    return await _record_payment(session, writer, customer_id, body)


async def _record_payment(
    session: AsyncSession, writer: Principal, customer_id: str, body: PaymentCreate
) -> Payment:
    payment = Payment(
        id=new_id(),
        customer_id=customer_id,
        amount=money(body.amount, body.currency),
        currency=body.currency,
        reference=body.reference,
        received_at=body.received_at,
        note=body.note,
        recorded_by=writer.subject,
        recorded_at=utcnow(),
    )
    await record_change(
        session, Actor.of(writer), table="payments", operation="insert", before=None, after=payment
    )
    return payment


_BULK_TABLES = {"demand": "demands", "progress": "progress", "payment": "payments"}


async def record_many(
    session: AsyncSession, writer: Principal, operations: Sequence[ToRecord], *, at_most: int
) -> list[Recorded]:
    """Each operation exactly as its own request would record it, all in the caller's transaction.

    The first operation refused (403, 404) refuses the whole request, naming its
    index; nothing of it is recorded (the caller rolls back).
    """
    if len(operations) > at_most:
        raise PayloadTooLarge(
            f"at most {at_most} operations per request, not {len(operations)}", field="body.operations"
        )
    recorded: list[Recorded] = []
    # Whether the writer may add to a customer's table is checked once per request:
    # nothing in it changes associations (an import of 1,000 payments of one
    # customer is one check, not 1,000).
    allowed: set[tuple[str, str]] = set()
    for index, operation in enumerate(operations):
        try:
            table = _BULK_TABLES[operation.kind]
            if (operation.customer_id, table) not in allowed:
                await _writable(session, writer, operation.customer_id, table)
                allowed.add((operation.customer_id, table))
            record: Demand | ProgressEntry | Payment
            match operation:
                case DemandToRecord():
                    record = await _record_demand(session, writer, operation.customer_id, operation.record)
                case ProgressToRecord():
                    record = await _record_progress(session, writer, operation.customer_id, operation.record)
                case PaymentToRecord():
                    record = await _record_payment(session, writer, operation.customer_id, operation.record)
        except Problem as refused:
            raise type(refused)(
                f"operations[{index}]: {refused.detail}",
                field=f"body.operations.{index}",
                headers=refused.headers,
                operation=index,
            ) from refused
        recorded.append(Recorded(kind=operation.kind, record=record))
    return recorded


async def correct_progress(
    session: AsyncSession,
    admin: Principal,
    customer_id: str,
    entry_id: str,
    body: ProgressCorrection,
    expected_version: int | None = None,
) -> ProgressEntry:
    """Progress entries are added, not edited, by the departments; admin corrects them (B3, B7)."""
    if not admin.is_admin:
        raise Forbidden("progress entries are corrected by admin only")
    await _writable(session, admin, customer_id, "progress")
    entry = await _of_customer(session, ProgressEntry, entry_id, customer_id, "progress entry")
    check_version(entry.version, expected_version)
    return await _update(
        session,
        Actor.of(admin),
        "progress",
        entry,
        _changes(body),
        reason=body.reason,
        feedback_ref=body.feedback_ref,
    )


async def correct_payment(
    session: AsyncSession,
    writer: Principal,
    customer_id: str,
    payment_id: str,
    body: PaymentCorrection,
    expected_version: int | None = None,
) -> Payment:
    await _writable(session, writer, customer_id, "payments")
    payment = await _of_customer(session, Payment, payment_id, customer_id, "payment")
    check_version(payment.version, expected_version)
    changes = _changes(body)
    if "amount" in changes:
        problem = check_amount(changes["amount"], payment.currency)
        if problem:
            raise Unprocessable(problem.replace("price", "amount"), field="body.amount")
        changes["amount"] = money(changes["amount"], payment.currency)
    return await _update(
        session,
        Actor.of(writer),
        "payments",
        payment,
        changes,
        reason=body.reason,
        feedback_ref=body.feedback_ref,
    )


async def add_association(
    session: AsyncSession, admin: Principal, customer_id: str, body: AssociationCreate
) -> Association:
    await _writable(session, admin, customer_id, "associations")
    reason = body.reason or f"associated by admin {admin.subject}"
    association = await _associate(session, Actor.of(admin), customer_id, body.department.value, reason)
    if association is None:
        raise Conflict(f"{body.department.value} is associated with customer {customer_id} already")
    return association


async def remove_association(
    session: AsyncSession, admin: Principal, customer_id: str, department: Department, body: Removal
) -> None:
    await _writable(session, admin, customer_id, "associations")
    association = (
        await session.exec(
            select(Association).where(
                Association.customer_id == customer_id, Association.department == department.value
            )
        )
    ).first()
    if association is None:
        raise NotFound(f"{department.value} is not associated with customer {customer_id}")
    await record_change(
        session,
        Actor.of(admin),
        table="associations",
        operation="delete",
        before=association,
        after=None,
        reason=body.reason,
        feedback_ref=body.feedback_ref,
    )


# --- the order and case feeds ----------------------------------------------

ORDERS = Actor.system("casebridge.orders.v1")
CASES = Actor.system("casebridge.cases.v1")
DEMAND_STATUS = {
    ORDER_PLACED: "open",
    ORDER_UPDATED: "open",
    ORDER_CANCELLED: "withdrawn",
    ORDER_COMPLETED: "met",
}


def order_handlers(default_department: str) -> dict[str, Handler]:
    """A new customer (associated with ``default_department``) and one demand per order."""

    async def order_state(uow: UnitOfWork, event: CloudEvent, order: OrderState) -> None:
        session = uow.session
        source = f"event:{event.id}"
        customer = await session.get(Customer, order.customer.customer_id)
        if customer is None:
            now = order.updated_at
            customer = Customer(
                id=order.customer.customer_id,
                full_name=order.customer.full_name,
                email=order.customer.email,
                phone=order.customer.phone,
                stage=default_department,
                created_at=now,
                updated_at=now,
            )
            await record_change(
                session,
                ORDERS,
                table="customers",
                operation="insert",
                before=None,
                after=customer,
                source=source,
            )
            await _associate(
                session, ORDERS, customer.id, default_department, f"new customer from order {order.order_id}"
            )
        status = DEMAND_STATUS[event.type] if order.status != "completed" else "met"
        demand = (await session.exec(select(Demand).where(Demand.order_id == order.order_id))).first()
        if demand is None:
            demand = Demand(
                id=new_id(),
                customer_id=customer.id,
                title=order.product.title[:200],
                description=order.description,
                category=order.product.category[:64],
                status=status,
                registered_by="orders",
                order_id=order.order_id,
                order_version=order.version,
                created_at=order.updated_at,
                updated_at=order.updated_at,
            )
            await record_change(
                session, ORDERS, table="demands", operation="insert", before=None, after=demand, source=source
            )
            return
        if demand.order_version is not None and demand.order_version >= order.version:
            return  # a stale or repeated state of the order
        await _update(
            session,
            ORDERS,
            "demands",
            demand,
            {"description": order.description, "status": status, "order_version": order.version},
            reason=f"order {order.order_id} {event.type.rsplit('.', 2)[-2]}",
            feedback_ref=None,
        )

    return dict.fromkeys(DEMAND_STATUS, order_state)


async def case_progress(uow: UnitOfWork, event: CloudEvent, case: CaseProgress) -> None:
    """Each step of a case is a progress entry of the order's project (B4)."""
    what = CASE_EVENTS[event.type]
    note = (
        case.solution_summary
        or case.reason
        or (f"assigned to {case.assignee_name}" if case.assignee_name else case.product_title)
    )
    entry = ProgressEntry(
        id=new_id(),
        customer_id=case.customer_id,
        project=case.order_id,
        stage=what,
        note=f"{note} (case status {case.status})" if note else f"case status {case.status}",
        department=None,
        recorded_by="case-handling",
        at=case.at,
    )
    await record_change(
        uow.session,
        CASES,
        table="progress",
        operation="insert",
        before=None,
        after=entry,
        source=f"event:{event.id}",
    )


CASE_HANDLERS: dict[str, Handler] = dict.fromkeys(CASE_EVENTS, case_progress)
