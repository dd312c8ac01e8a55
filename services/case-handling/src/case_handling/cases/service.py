"""The case domain: orders become cases, staff move them through their states (A5, A6, A8).

Every change writes its event to the outbox in the same unit of work. Events
carry only what the customer may see: analysis text, internal communication
summaries and internal file names stay here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import String, and_, bindparam, cast, false, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from case_handling.cases import events
from case_handling.cases.models import (
    ALLOWED_FROM,
    FINAL_STATUSES,
    AnalysisCreate,
    Attachment,
    Case,
    CaseEntry,
    CaseStatus,
    CaseUpdate,
    CatalogProduct,
    CommunicationCreate,
    SolutionCreate,
)
from case_handling.cases.rules import CaseWrite, authorize_write
from case_handling.intake.events import OrderCancelled, OrderState, ProductState
from case_handling.settings import StaffTeam
from casebridge_shared.auth import Principal
from casebridge_shared.db import new_id, one_of, table_of, transaction_scoped, utcnow
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.pagination import KeyPart, Keyset, PageParams
from casebridge_shared.problems import Conflict, Forbidden, NotFound
from casebridge_shared.versioning import check_version

ORDER_CONTROLLED_BY_CUSTOMER = "order"  # author id of entries caused by the customer's order


# --- from order-intake's events ---------------------------------------------------


_OPENED_IN_THIS_TRANSACTION = "case_handling.opened_cases"
_LOOKED_UP_IN_THIS_TRANSACTION = "case_handling.cases_by_order"
# Built once: the statements keep their cache keys, each event only binds its order ids.
_CASE_FOR_ORDER = select(Case).where(col(Case.order_id) == bindparam("order_id")).with_for_update()


_CASES = table_of(Case)
_ENTRIES = table_of(CaseEntry)


@functools.cache
def _cases_for_orders(dialect: str) -> SelectOfScalar[Case]:
    return select(Case).where(one_of(_CASES.c.order_id, "order_ids", dialect)).with_for_update()


def _opened_in_this_transaction(session: AsyncSession) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Cases opened in this transaction and not written yet, by order id: the case's queued row
    and its first timeline entry's."""
    return transaction_scoped(session, _OPENED_IN_THIS_TRANSACTION, dict)


def _looked_up_in_this_transaction(session: AsyncSession) -> dict[str, Case | None]:
    """Order id -> its case (locked), or None for an order without one, as found in this transaction."""
    return transaction_scoped(session, _LOOKED_UP_IN_THIS_TRANSACTION, dict)


async def look_up_cases_for_orders(uow: UnitOfWork, order_ids: Sequence[str]) -> None:
    """Find the cases of a run of order events in one query rather than one per event.

    A backlog of new orders would otherwise cost a round trip each only to learn
    that no case exists yet. The rows are locked as ``_case_for_order`` locks them.
    """
    looked_up = _looked_up_in_this_transaction(uow.session)
    wanted = sorted({o for o in order_ids if o not in looked_up})
    if not wanted:
        return
    with uow.session.no_autoflush:
        statement = _cases_for_orders(uow.session.get_bind().dialect.name)
        found = {c.order_id: c for c in await uow.session.exec(statement, params={"order_ids": wanted})}
    for order_id in wanted:
        looked_up[order_id] = found.get(order_id)


async def _case_for_order(uow: UnitOfWork, order_id: str) -> Case | None:
    # A run of order events is applied in one transaction: a case opened earlier
    # in the run is a row queued for the commit, not in the database yet. A
    # later event of the run that changes it (the order updated or cancelled
    # straight after it was placed) takes the rows back and works on them as
    # ORM objects, which the flush writes in the order added: the opened entry
    # keeps its place before the entries that follow it.
    session = uow.session
    looked_up = _looked_up_in_this_transaction(session)
    opened = _opened_in_this_transaction(session).pop(order_id, None)
    if opened is not None:
        row, entry = opened
        uow.withdraw(_CASES, row)
        uow.withdraw(_ENTRIES, entry)
        case = Case(**row)
        session.add(case)
        session.add(CaseEntry(**entry))
        looked_up[order_id] = case
        return case
    if order_id in looked_up:
        return looked_up[order_id]
    with session.no_autoflush:
        found = (await session.exec(_CASE_FOR_ORDER, params={"order_id": order_id})).first()
    looked_up[order_id] = found
    return found


def _service_information(order: OrderState) -> dict[str, Any]:
    product = order.product
    return {
        "customer_id": order.customer.customer_id,
        "customer": order.customer.model_dump(mode="json"),
        "product_id": product.product_id,
        "product": product.model_dump(mode="json"),
        "product_title": product.title[:200],
        "product_category": product.category[:100],
        "price": str(product.price),
        "currency": product.currency,
        "description": order.description,
    }


def _base(case: Case) -> dict[str, Any]:
    return {
        "case_id": case.id,
        "order_id": case.order_id,
        "customer_id": case.customer_id,
        "status": case.status,
        "at": case.updated_at,
    }


def _entry(
    uow: UnitOfWork,
    case: Case,
    kind: str,
    author: Principal | None,
    *,
    customer_visible: bool = False,
    **data: Any,
) -> None:
    uow.session.add(
        CaseEntry(
            case_id=case.id,
            kind=kind,
            at=case.updated_at,
            author_id=author.subject if author else ORDER_CONTROLLED_BY_CUSTOMER,
            author_name=(author.name or author.email) if author else None,
            status=case.status,
            customer_visible=customer_visible,
            data=data,
        )
    )


def _touch(case: Case) -> None:
    case.version += 1
    case.updated_at = utcnow()


async def open_case(uow: UnitOfWork, order: OrderState, order_version: int) -> str | None:
    """``order placed``: the case with its service information. A second copy is a no-op.

    The case and its first timeline entry are rows queued for the commit, not
    ORM objects: building, tracking and flushing two ORM objects per order was
    most of the consumer's time draining a backlog (see ADR-0017).
    Returns the new case's id; None if the order has a case already.
    """
    if await _case_for_order(uow, order.order_id) is not None:
        return None
    now = utcnow()
    row: dict[str, Any] = {
        "id": new_id(),
        "order_id": order.order_id,
        "order_version": order_version,
        "order_placed_at": order.created_at,
        "created_at": now,
        "updated_at": now,
        "status": CaseStatus.NEW,
        "version": 1,
        "priority": "normal",
        **_service_information(order),
    }
    entry: dict[str, Any] = {
        "case_id": row["id"],
        "kind": "opened",
        "at": now,
        "author_id": ORDER_CONTROLLED_BY_CUSTOMER,
        "author_name": None,
        "status": row["status"],
        "customer_visible": True,
        "data": {},
    }
    uow.insert_at_commit(_CASES, row)
    uow.insert_at_commit(_ENTRIES, entry)
    _opened_in_this_transaction(uow.session)[order.order_id] = (row, entry)
    uow.emit(
        events.CaseOpened(
            case_id=row["id"],
            order_id=order.order_id,
            customer_id=row["customer_id"],
            status=row["status"],
            at=now,
            product_category=row["product_category"],
            product_title=row["product_title"],
        ),
        key=row["id"],
        version=1,
    )
    return str(row["id"])


async def case_for_order(uow: UnitOfWork, order_id: str) -> Case | None:
    """The order's case (one opened earlier in this transaction too), or None."""
    return await _case_for_order(uow, order_id)


async def update_from_order(uow: UnitOfWork, order: OrderState, order_version: int) -> Case | None:
    """``order updated``: newer service information; stale versions are ignored.

    An order without a case changes nothing here: the consumer dead-letters such
    an event before it gets here (intake.service).
    """
    case = await _case_for_order(uow, order.order_id)
    if case is None or order_version <= case.order_version:
        return None
    info = _service_information(order)
    changed = {k: v for k, v in info.items() if getattr(case, k) != v}
    for name, value in changed.items():
        setattr(case, name, value)
    case.order_version = order_version
    _touch(case)
    uow.session.add(case)
    _entry(uow, case, "order_updated", None, fields=sorted(changed))
    return case


async def cancel_from_order(uow: UnitOfWork, order: OrderCancelled, order_version: int) -> Case | None:
    """``order cancelled``: the case is cancelled unless it is already closed (or there is none)."""
    case = await _case_for_order(uow, order.order_id)
    if case is None or CaseStatus(case.status) in FINAL_STATUSES:
        return None
    case.order_version = max(case.order_version, order_version)
    _cancel(uow, case, None, order.reason or "the customer cancelled the order")
    return case


async def upsert_product(uow: UnitOfWork, product: ProductState) -> None:
    """Keep the staff's reference copy of the catalog; stale versions are ignored."""
    row = await uow.session.get(CatalogProduct, product.product_id)
    if row is not None and row.version >= product.version:
        return
    row = row or CatalogProduct(
        id=product.product_id, title="", description="", category="", price="", currency=""
    )
    row.title = product.title[:200]
    row.description = product.description
    row.deliverables = list(product.deliverables)
    row.category = product.category[:100]
    row.price = str(product.price)
    row.currency = product.currency
    row.active = product.active
    row.archived = product.archived
    row.version = product.version
    row.updated_at = product.updated_at
    uow.session.add(row)


# --- staff actions --------------------------------------------------------------------


async def get_case(session: AsyncSession, case_id: str, *, for_update: bool = False) -> Case:
    query = select(Case).where(Case.id == case_id)
    if for_update:
        query = query.with_for_update()
    case = (await session.exec(query)).first()
    if case is None:
        raise NotFound(f"no case {case_id}")
    return case


def _require(case: Case, action: str, expected_version: int | None) -> None:
    check_version(case.version, expected_version)
    if CaseStatus(case.status) not in ALLOWED_FROM[action]:
        raise Conflict(
            f"a case in state '{case.status}' cannot be {_PAST[action]}",
            field="status",
            current_status=case.status,
        )


_PAST = {
    "claim": "claimed",
    "assign": "assigned",
    "start": "started",
    "solution": "given a solution",
    "close": "closed",
    "cancel": "cancelled",
    "work": "changed",
}


def _assign(uow: UnitOfWork, case: Case, by: Principal, assignee_id: str, assignee_name: str | None) -> None:
    previous = CaseStatus(case.status)
    case.assignee_id = assignee_id
    case.assignee_name = assignee_name
    if previous == CaseStatus.NEW:
        case.status = CaseStatus.ASSIGNED
    _touch(case)
    uow.session.add(case)
    _entry(uow, case, "assigned", by, customer_visible=previous == CaseStatus.NEW, assignee_id=assignee_id)
    uow.emit(
        events.CaseAssigned(
            **_base(case),
            assignee_id=assignee_id,
            assignee_name=assignee_name,
            assigned_by=by.subject,
            product_category=case.product_category,
        ),
        key=case.id,
        version=case.version,
    )


async def claim(uow: UnitOfWork, principal: Principal, case_id: str, expected_version: int | None) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "claim", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.CLAIM)
    if case.assignee_id is not None and case.assignee_id != principal.subject:
        raise Conflict(
            "this case is already assigned; a supervisor can reassign it",
            field="assignee_id",
            current_status=case.status,
        )
    _assign(uow, case, principal, principal.subject, principal.name or principal.email)
    return case


async def assign(
    uow: UnitOfWork,
    principal: Principal,
    case_id: str,
    assignee_id: str,
    assignee_name: str | None,
    expected_version: int | None,
) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "assign", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.ASSIGN)
    _assign(uow, case, principal, assignee_id, assignee_name)
    return case


def _change_status(uow: UnitOfWork, case: Case, by: Principal | None, to: CaseStatus) -> CaseStatus:
    previous = case.status
    case.status = to
    _touch(case)
    uow.session.add(case)
    _entry(uow, case, "status_changed", by, customer_visible=True, previous_status=previous.value)
    uow.emit(
        events.CaseStatusChanged(**_base(case), previous_status=previous),
        key=case.id,
        version=case.version,
    )
    return previous


async def start(uow: UnitOfWork, principal: Principal, case_id: str, expected_version: int | None) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "start", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.START)
    _change_status(uow, case, principal, CaseStatus.IN_PROGRESS)
    return case


async def record_analysis(
    uow: UnitOfWork, principal: Principal, case_id: str, data: AnalysisCreate, expected_version: int | None
) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "work", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.ANALYSIS)
    _touch(case)
    uow.session.add(case)
    _entry(uow, case, "analysis", principal, text=data.text)
    uow.emit(events.AnalysisRecorded(**_base(case)), key=case.id, version=case.version)
    return case


async def record_communication(
    uow: UnitOfWork,
    principal: Principal,
    case_id: str,
    data: CommunicationCreate,
    expected_version: int | None,
) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "work", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.COMMUNICATION)
    _touch(case)
    uow.session.add(case)
    _entry(
        uow,
        case,
        "communication",
        principal,
        customer_visible=data.customer_visible,
        channel=data.channel,
        direction=data.direction,
        summary=data.summary,
        occurred_at=data.occurred_at.isoformat(),
    )
    uow.emit(
        events.CommunicationRecorded(
            **_base(case),
            channel=data.channel,
            direction=data.direction,
            occurred_at=data.occurred_at,
            customer_visible_summary=data.summary if data.customer_visible else None,
        ),
        key=case.id,
        version=case.version,
    )
    return case


async def propose_solution(
    uow: UnitOfWork, principal: Principal, case_id: str, data: SolutionCreate, expected_version: int | None
) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "solution", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.SOLUTION)
    case.solution_summary = data.summary
    case.solution_text = data.text
    case.status = CaseStatus.SOLUTION_PROPOSED
    _touch(case)
    uow.session.add(case)
    _entry(uow, case, "solution", principal, customer_visible=True, summary=data.summary, text=data.text)
    uow.emit(
        events.SolutionProposed(
            **_base(case),
            solution_summary=data.summary,
            solution_text=data.text,
            proposed_by=principal.subject,
        ),
        key=case.id,
        version=case.version,
    )
    return case


async def close(uow: UnitOfWork, principal: Principal, case_id: str, expected_version: int | None) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "close", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.CLOSE)
    case.status = CaseStatus.CLOSED
    _touch(case)
    case.closed_at = case.updated_at
    uow.session.add(case)
    _entry(uow, case, "closed", principal, customer_visible=True)
    uow.emit(events.CaseClosed(**_base(case)), key=case.id, version=case.version)
    return case


def _cancel(uow: UnitOfWork, case: Case, by: Principal | None, reason: str) -> None:
    case.status = CaseStatus.CANCELLED
    _touch(case)
    case.cancelled_at = case.updated_at
    uow.session.add(case)
    _entry(uow, case, "cancelled", by, customer_visible=True, reason=reason)
    uow.emit(
        events.CaseCancelled(**_base(case), reason=reason, assignee_id=case.assignee_id),
        key=case.id,
        version=case.version,
    )


async def cancel(
    uow: UnitOfWork, principal: Principal, case_id: str, reason: str, expected_version: int | None
) -> Case:
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "cancel", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.CANCEL)
    _cancel(uow, case, principal, reason)
    return case


async def update_case(
    uow: UnitOfWork, principal: Principal, case_id: str, data: CaseUpdate, expected_version: int | None
) -> Case:
    """Correct or complete the service information (A8); no event: it stays internal."""
    case = await get_case(uow.session, case_id, for_update=True)
    _require(case, "work", expected_version)
    authorize_write(principal, case.assignee_id, CaseWrite.UPDATE)
    changes = data.model_dump(exclude_unset=True)
    phone = changes.pop("customer_phone", None)
    changed: dict[str, Any] = {}
    for name, value in changes.items():
        if getattr(case, name) != value:
            changed[name] = {"before": _jsonable(getattr(case, name)), "after": _jsonable(value)}
            setattr(case, name, value)
    if "customer_phone" in data.model_fields_set and case.customer.get("phone") != phone:
        changed["customer.phone"] = {"before": case.customer.get("phone"), "after": phone}
        case.customer = {**case.customer, "phone": phone}
    if not changed:
        return case
    _touch(case)
    uow.session.add(case)
    _entry(uow, case, "service_information_updated", principal, changes=changed)
    return case


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def require_open(case: Case) -> None:
    """409 unless the case is still worked on (not closed or cancelled)."""
    _require(case, "work", None)


def require_workable(case: Case, principal: Principal) -> None:
    """Uploads: on an open case, by whom ``authorize_write`` allows."""
    _require(case, "work", None)
    authorize_write(principal, case.assignee_id, CaseWrite.ATTACH)


def attachment_added(uow: UnitOfWork, case: Case, attachment: Attachment, principal: Principal) -> None:
    """Record an upload (the file is already in place) and tell the world what it may know."""
    _touch(case)
    uow.session.add(case)
    customer_visible = attachment.visibility == "customer"
    _entry(
        uow,
        case,
        "attachment",
        principal,
        customer_visible=customer_visible,
        attachment_id=attachment.id,
        file_name=attachment.file_name,
        media_type=attachment.media_type,
        size=attachment.size,
        sha256=attachment.sha256,
        visibility=attachment.visibility,
    )
    uow.emit(
        events.AttachmentAdded(
            **_base(case),
            attachment_id=attachment.id,
            visibility="customer" if customer_visible else "internal",
            sha256=attachment.sha256,
            size=attachment.size,
            media_type=attachment.media_type,
            file_name=attachment.file_name if customer_visible else None,
        ),
        key=case.id,
        version=case.version,
    )


# --- queries --------------------------------------------------------------------------

SortKey = Literal[
    "created_at", "-created_at", "updated_at", "-updated_at", "order_placed_at", "-order_placed_at"
]
# The console's queues: open cases, those nobody has, mine, my team's, past their service level.
Queue = Literal["open", "unassigned", "mine", "team", "overdue"]
QUEUES: tuple[Queue, ...] = ("open", "unassigned", "mine", "team", "overdue")
OPEN_STATUSES = tuple(s for s in CaseStatus if s not in FINAL_STATUSES)


def add_working_days(start: datetime, days: int) -> datetime:
    """``start`` moved by ``days`` working days (Monday to Friday; negative: back), same clock time."""
    step = timedelta(days=1 if days >= 0 else -1)
    moment, left = start, abs(days)
    while left:
        moment += step
        if moment.weekday() < 5:
            left -= 1
    return moment


def sla_due_at(case: Case, sla_working_days: int) -> datetime:
    """When the case is due: its own due date, else ``sla_working_days`` after it was opened."""
    return case.due_at or add_working_days(case.created_at, sla_working_days)


def is_overdue(case: Case, sla_working_days: int, now: datetime) -> bool:
    return case.status in OPEN_STATUSES and sla_due_at(case, sla_working_days) < now


def team_categories(principal: Principal, teams: dict[str, StaffTeam]) -> set[str]:
    """The product categories handled by the teams ``principal`` is a member of."""
    me = {principal.subject, *([principal.email.lower()] if principal.email else [])}
    found: set[str] = set()
    for team in teams.values():
        if me.intersection(m.lower() if "@" in m else m for m in team.members):
            found.update(team.categories)
    return found


def queue_conditions(
    queue: Queue, principal: Principal, *, sla_working_days: int, teams: dict[str, StaffTeam], now: datetime
) -> list[Any]:
    conditions: list[Any] = [col(Case.status).in_(OPEN_STATUSES)]
    if queue == "unassigned":
        conditions.append(col(Case.assignee_id).is_(None))
    elif queue == "mine":
        conditions.append(col(Case.assignee_id) == principal.subject)
    elif queue == "team":
        categories = sorted(team_categories(principal, teams))
        conditions.append(col(Case.product_category).in_(categories) if categories else false())
    elif queue == "overdue":
        # Opened more than N working days ago is the same as due (opened + N) before now.
        cutoff = add_working_days(now, -sla_working_days)
        conditions.append(
            or_(
                col(Case.due_at) < now,
                and_(col(Case.due_at).is_(None), col(Case.created_at) < cutoff),
            )
        )
    return conditions


def search_condition(q: str) -> Any:
    """Free text over the service information: the customer's description, the product, the
    customer's name and e-mail (case-insensitive), the internal notes, and the order number the
    customer quotes on the phone (whole, or its first characters as the pages show them)."""
    needle = f"%{q.lower()}%"
    number = q.strip().lower()
    return or_(
        col(Case.order_id) == q.strip(),
        *([func.lower(col(Case.order_id)).like(f"{number}%")] if len(number) >= 4 else []),
        func.lower(col(Case.description)).like(needle),
        func.lower(col(Case.product_title)).like(needle),
        func.lower(cast(col(Case.customer), String)).like(needle),
        func.lower(col(Case.internal_notes)).like(needle),
    )


async def list_cases(
    session: AsyncSession,
    *,
    status: CaseStatus | None,
    assignee_id: str | None,
    category: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    q: str | None,
    sort: SortKey,
    page: PageParams,
    queue: list[Any] | None = None,
) -> tuple[list[Case], int, str | None]:
    """A page of the cases found, the total and the next cursor.

    ``queue``: the conditions of one of the console's queues (``queue_conditions``).
    """
    conditions: list[Any] = list(queue or [])
    if status is not None:
        conditions.append(Case.status == status)
    if assignee_id is not None:
        conditions.append(
            col(Case.assignee_id).is_(None) if assignee_id == "none" else Case.assignee_id == assignee_id
        )
    if category is not None:
        conditions.append(Case.product_category == category)
    if created_from is not None:
        conditions.append(col(Case.created_at) >= created_from)
    if created_to is not None:
        conditions.append(col(Case.created_at) < created_to)
    if q:
        conditions.append(search_condition(q))
    total = (await session.exec(select(func.count()).select_from(Case).where(*conditions))).one()
    keyset = case_keyset(sort)
    rows = list((await session.exec(keyset.window(select(Case).where(*conditions), page))).all())
    name = sort.lstrip("-")
    items, next_cursor = keyset.cut(rows, page, lambda c: (getattr(c, name), c.id))
    return items, int(total), next_cursor


def case_keyset(sort: SortKey) -> Keyset:
    """The sort column, then the id: cases created in the same microsecond keep an order.

    The cursor binds to ``sort`` (a filter to it), so a cursor of one sort is refused under another.
    """
    return Keyset(
        KeyPart(col(getattr(Case, sort.lstrip("-"))), datetime, descending=sort.startswith("-")),
        KeyPart(col(Case.id), str),
    )


async def queue_counts(
    session: AsyncSession,
    principal: Principal,
    *,
    q: str | None,
    sla_working_days: int,
    teams: dict[str, StaffTeam],
    now: datetime,
) -> dict[Queue, int]:
    """How many cases each queue holds (within the search ``q``, when given)."""
    counts: dict[Queue, int] = {}
    for queue in QUEUES:
        conditions = queue_conditions(
            queue, principal, sla_working_days=sla_working_days, teams=teams, now=now
        )
        if q:
            conditions.append(search_condition(q))
        counts[queue] = int(
            (await session.exec(select(func.count()).select_from(Case).where(*conditions))).one()
        )
    return counts


# The actions a case offers, each with the state rule it follows (ALLOWED_FROM) and the
# write rule (rules.authorize_write): the console shows what these allow, nothing more.
_ACTIONS: dict[str, tuple[str, CaseWrite]] = {
    "claim": ("claim", CaseWrite.CLAIM),
    "assign": ("assign", CaseWrite.ASSIGN),
    "start": ("start", CaseWrite.START),
    "analysis": ("work", CaseWrite.ANALYSIS),
    "communication": ("work", CaseWrite.COMMUNICATION),
    "attach": ("work", CaseWrite.ATTACH),
    "update": ("work", CaseWrite.UPDATE),
    "solution": ("solution", CaseWrite.SOLUTION),
    "close": ("close", CaseWrite.CLOSE),
    "cancel": ("cancel", CaseWrite.CANCEL),
}


def allowed_actions(case: Case, principal: Principal) -> list[str]:
    """What ``principal`` may do to ``case`` now, by the same rules the writes check."""
    allowed: list[str] = []
    for name, (state_rule, write) in _ACTIONS.items():
        if CaseStatus(case.status) not in ALLOWED_FROM[state_rule]:
            continue
        try:
            authorize_write(principal, case.assignee_id, write)
        except Forbidden:
            continue
        if name == "claim" and case.assignee_id is not None:
            continue  # already someone's (claim() refuses with 409); a supervisor assigns
        allowed.append(name)
    return allowed


async def timeline(session: AsyncSession, case_id: str) -> Sequence[CaseEntry]:
    rows = await session.exec(
        select(CaseEntry).where(CaseEntry.case_id == case_id).order_by(col(CaseEntry.at), col(CaseEntry.id))
    )
    return rows.all()


async def attachments_of(session: AsyncSession, case_id: str) -> Sequence[Attachment]:
    rows = await session.exec(
        select(Attachment).where(Attachment.case_id == case_id).order_by(col(Attachment.uploaded_at))
    )
    return rows.all()
