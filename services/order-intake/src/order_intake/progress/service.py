"""Applying case-handling's events to the customer's order (A7, A9). No HTTP here.

The order's status follows the case but never moves backwards and never
leaves a final state, so a late or repeated event cannot undo what the
customer already saw. Every step the customer should know about becomes a
time-stamped progress entry; what staff keep internal (analysis text,
internal notes and files) is never in these events to begin with.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any

from sqlmodel import select
from sqlmodel.sql.expression import SelectOfScalar

from casebridge_shared.db import one_of, queue_insert, table_of, transaction_scoped
from casebridge_shared.events import CloudEvent
from casebridge_shared.files import clean_file_name
from casebridge_shared.inbox import Handler, PoisonEvent
from casebridge_shared.outbox import UnitOfWork
from order_intake.documents import service as documents
from order_intake.orders import service as orders
from order_intake.orders.models import FINAL_STATUSES, Order, OrderProgress, OrderStatus
from order_intake.progress.events import (
    ANALYSIS_RECORDED,
    ATTACHMENT_ADDED,
    CASE_ASSIGNED,
    CASE_CANCELLED,
    CASE_CLOSED,
    CASE_MESSAGE_POSTED,
    CASE_OPENED,
    COMMUNICATION_RECORDED,
    SOLUTION_PROPOSED,
    STATUS_CHANGED,
    AttachmentAdded,
    CaseAssigned,
    CaseCancelled,
    CaseEvent,
    CaseMessagePosted,
    CaseOpened,
    CommunicationRecorded,
    SolutionProposed,
)
from order_intake.threads import service as threads
from order_intake.threads.models import OrderMessage

_PROGRESS = table_of(OrderProgress)

# What each case state means for the order, as the customer sees it.
ORDER_STATUS_FOR_CASE: dict[str, OrderStatus] = {
    "new": OrderStatus.ACCEPTED,
    "assigned": OrderStatus.IN_PROGRESS,
    "in_progress": OrderStatus.IN_PROGRESS,
    "solution_proposed": OrderStatus.SOLUTION_PROPOSED,
    "closed": OrderStatus.COMPLETED,
    "cancelled": OrderStatus.CANCELLED,
}
_RANK = {
    OrderStatus.SUBMITTED: 0,
    OrderStatus.ACCEPTED: 1,
    OrderStatus.IN_PROGRESS: 2,
    OrderStatus.SOLUTION_PROPOSED: 3,
    OrderStatus.COMPLETED: 4,
    OrderStatus.CANCELLED: 4,
}
_CHANNEL = {"phone": "by phone", "email": "by email", "meeting": "in a meeting", "message": "by message"}


async def _order(uow: UnitOfWork, case: CaseEvent) -> Order:
    order = _run_orders(uow).get(case.order_id) or await uow.session.get(Order, case.order_id)
    if order is None or order.customer_id != case.customer_id:
        # Not transient: retrying will not make the order appear. The dead
        # letter keeps it for an operator to replay.
        raise PoisonEvent(f"case {case.case_id} refers to order {case.order_id}, which is not here")
    return order


async def _open_order(uow: UnitOfWork, case: CaseEvent) -> Order | None:
    """The order, unless it is already completed or cancelled: then nothing more is shown."""
    order = await _order(uow, case)
    return None if OrderStatus(order.status) in FINAL_STATUSES else order


def _advance(order: Order, case: CaseEvent) -> bool:
    """Move the order's status towards the case's; returns whether it changed."""
    current = OrderStatus(order.status)
    target = ORDER_STATUS_FOR_CASE[case.status]
    if current in FINAL_STATUSES or _RANK[target] <= _RANK[current]:
        return False
    order.status = target
    if target is OrderStatus.CANCELLED:
        order.cancelled_at = case.at
    return True


def _step(uow: UnitOfWork, order: Order, case: CaseEvent, title: str, detail: str | None = None) -> None:
    # A row queued for the commit, not an ORM object: a run of events adds its
    # entries in one insert, and nothing in the run reads them back.
    queue_insert(
        uow.session,
        _PROGRESS,
        {"order_id": order.id, "at": case.at, "status": order.status, "title": title, "detail": detail},
    )
    # The order's representation changed: a customer's If-Match on the old
    # version must now fail rather than overwrite what staff did.
    order.version += 1
    orders.order_changed(uow.session, order)  # the live order page shows the new step


async def before_run(uow: UnitOfWork, run: Sequence[tuple[CloudEvent, Any]]) -> None:
    """The run's orders, loaded in one query: each event then finds its order in the session.

    One look-up per event also sent the previous event's changes to the database
    first (the session's autoflush): two trips per event instead of none.
    """
    order_ids = sorted({payload.order_id for _, payload in run if isinstance(payload, CaseEvent)})
    if order_ids:
        statement = _orders_of(uow.session.get_bind().dialect.name)
        found = await uow.session.exec(statement, params={"order_ids": order_ids})
        # Held here: the session's identity map keeps unchanged objects only weakly.
        _run_orders(uow).update((order.id, order) for order in found)


@functools.cache
def _orders_of(dialect: str) -> SelectOfScalar[Order]:
    return select(Order).where(one_of(table_of(Order).c.id, "order_ids", dialect))


def _run_orders(uow: UnitOfWork) -> dict[str, Order]:
    return transaction_scoped(uow.session, "order_intake.run_orders", dict)


async def case_opened(uow: UnitOfWork, event: CloudEvent, case: CaseOpened) -> None:
    order = await _open_order(uow, case)
    if order is None:
        return
    _advance(order, case)
    _step(uow, order, case, "Order accepted", f"Our team opened a case for {case.product_title}.")


async def case_assigned(uow: UnitOfWork, event: CloudEvent, case: CaseAssigned) -> None:
    order = await _open_order(uow, case)
    if order is None:
        return
    _advance(order, case)
    who = case.assignee_name or "A legal expert"
    _step(uow, order, case, "Expert assigned", f"{who} is handling your order.")


async def status_changed(uow: UnitOfWork, event: CloudEvent, case: CaseEvent) -> None:
    order = await _open_order(uow, case)
    if order is None:
        return
    if case.status == "in_progress":
        _advance(order, case)
        _step(uow, order, case, "Work started", "Your case is being worked on.")
    elif _advance(order, case):
        _step(uow, order, case, "Status changed", None)


async def analysis_recorded(uow: UnitOfWork, event: CloudEvent, case: CaseEvent) -> None:
    order = await _open_order(uow, case)
    if order is None:
        return
    _advance(order, case)
    _step(uow, order, case, "Legal analysis done", "We analysed your legal need.")


async def communication_recorded(uow: UnitOfWork, event: CloudEvent, case: CommunicationRecorded) -> None:
    order = await _open_order(uow, case)
    if order is None:
        return
    _advance(order, case)
    verb = "You contacted us" if case.direction == "inbound" else "We contacted you"
    _step(uow, order, case, f"{verb} {_CHANNEL[case.channel]}", case.customer_visible_summary)
    if case.customer_visible_summary:
        # Also in the order's thread, beside the messages (issue 26); its id comes from the event's.
        item_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event.source}#{event.id}"))
        threads.add_communication(
            uow.session, order, message_id=item_id, summary=case.customer_visible_summary, at=case.at
        )


async def case_message_posted(uow: UnitOfWork, event: CloudEvent, message: CaseMessagePosted) -> None:
    """A staff reply joins the order's thread, also on a completed or cancelled order (it was written)."""
    order = await _order(uow, message)
    if await uow.session.get(OrderMessage, message.message_id) is not None:
        return  # the same reply again (a replay past the inbox's memory)
    threads.add_staff_message(
        uow.session,
        order,
        message_id=message.message_id,
        author_name=message.author_name,
        body=message.body,
        at=message.at,
    )


async def solution_proposed(uow: UnitOfWork, event: CloudEvent, case: SolutionProposed) -> None:
    order = await _open_order(uow, case)
    if order is None:
        return  # a solution for a cancelled order is not shown as if it were live
    _advance(order, case)
    order.solution_summary = case.solution_summary
    order.solution_text = case.solution_text
    order.solution_at = case.at
    _step(uow, order, case, "Solution ready", case.solution_summary)


async def attachment_added(uow: UnitOfWork, event: CloudEvent, attachment: AttachmentAdded) -> None:
    if attachment.visibility != "customer":
        return  # internal files stay in case-handling
    order = await _open_order(uow, attachment)
    if order is None:
        return
    # The name is case-handling's, cleaned there; cleaned again here (older events, and
    # it reaches the customer's timeline and download).
    file_name = clean_file_name(attachment.file_name) or f"document-{attachment.attachment_id}"
    if await documents.announce(
        uow.session,
        attachment_id=attachment.attachment_id,
        order_id=order.id,
        case_id=attachment.case_id,
        file_name=file_name,
        media_type=attachment.media_type,
        size=attachment.size,
        sha256=attachment.sha256,
        at=attachment.at,
    ):
        _step(uow, order, attachment, "Document added", file_name)


async def case_closed(uow: UnitOfWork, event: CloudEvent, case: CaseEvent) -> None:
    order = await _order(uow, case)
    if _advance(order, case):
        _step(uow, order, case, "Order completed", "Your case is closed.")
        # Others learn it from order-intake (the ledger's demand is met), with the status.
        orders.publish_completed(uow, order)


async def case_cancelled(uow: UnitOfWork, event: CloudEvent, case: CaseCancelled) -> None:
    order = await _order(uow, case)
    if not _advance(order, case):
        return  # already cancelled by the customer, or completed
    order.cancel_reason = order.cancel_reason or case.reason
    _step(uow, order, case, "Order cancelled", case.reason)
    # Cancelled by staff on the case: the ledger's demand is withdrawn as when the customer cancels.
    orders.publish_cancelled_by_staff(uow, order, case.reason)


HANDLERS: dict[str, Handler] = {
    CASE_OPENED: case_opened,
    CASE_ASSIGNED: case_assigned,
    STATUS_CHANGED: status_changed,
    ANALYSIS_RECORDED: analysis_recorded,
    COMMUNICATION_RECORDED: communication_recorded,
    SOLUTION_PROPOSED: solution_proposed,
    ATTACHMENT_ADDED: attachment_added,
    CASE_CLOSED: case_closed,
    CASE_CANCELLED: case_cancelled,
    CASE_MESSAGE_POSTED: case_message_posted,
}
