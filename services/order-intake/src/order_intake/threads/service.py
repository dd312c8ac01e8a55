"""The order's thread: messages both ways, the customer's files, read receipts. No HTTP here.

Every change and its event commit together (outbox). The customer writes and
attaches only on their own order while it is open (not completed or cancelled:
nobody works the case any more, ADR-0030); staff read
the thread here but reply in case-handling, whose event brings the reply back.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Principal, Role
from casebridge_shared.db import utcnow
from casebridge_shared.idempotency import check_same_request
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict, Forbidden, NotFound, Unprocessable
from casebridge_shared.uploads import StoredFile
from order_intake.documents.models import Document
from order_intake.orders import service as orders
from order_intake.orders.models import FINAL_STATUSES, Order, OrderStatus
from order_intake.threads import events
from order_intake.threads.models import OrderFile, OrderMessage, ReadReceipt


async def order_for(session: AsyncSession, principal: Principal, order_id: str) -> Order:
    """The order if ``principal`` may see it: its customer, staff, or a service (case-handling's
    fetch of the customer's files); anyone else's order is a 404 like a missing one."""
    if Role.SERVICE in principal.roles:
        order = await session.get(Order, order_id)
        if order is None:
            raise NotFound(f"no order {order_id}")
        return order
    return await orders.get_order(session, principal, order_id)


async def _own_open_order(uow: UnitOfWork, principal: Principal, order_id: str, doing: str) -> Order:
    order = await orders.get_order(uow.session, principal, order_id)
    if order.customer_id != principal.subject:
        raise Forbidden(f"only the customer who placed the order may {doing}")
    if OrderStatus(order.status) in FINAL_STATUSES:
        raise Conflict(
            f"the order is {order.status}: nobody works on it any more, so you can no longer {doing}",
            field="status",
            current_status=order.status,
        )
    return order


# --- messages ---------------------------------------------------------------------


async def messages_of(session: AsyncSession, principal: Principal, order_id: str) -> list[OrderMessage]:
    order = await order_for(session, principal, order_id)
    rows = await session.exec(
        select(OrderMessage)
        .where(OrderMessage.order_id == order.id)
        .order_by(col(OrderMessage.at), col(OrderMessage.id))
    )
    return list(rows.all())


def _request_hash(body: str) -> str:
    # The message's own SHA-256, not the shared ``request_hash``: the keys already kept
    # were fingerprinted so, and a retry across an upgrade must still match.
    return hashlib.sha256(body.encode()).hexdigest()


async def _replayed(
    uow: UnitOfWork, order: Order, principal: Principal, key: str, body: str
) -> OrderMessage | None:
    earlier = (
        await uow.session.exec(
            select(OrderMessage).where(
                OrderMessage.order_id == order.id,
                OrderMessage.author_id == principal.subject,
                OrderMessage.idempotency_key == key,
            )
        )
    ).first()
    if earlier is not None:
        check_same_request(earlier.request_hash, _request_hash(body), "message")
    return earlier


async def post_message(
    uow: UnitOfWork, principal: Principal, order_id: str, body: str, idempotency_key: str | None
) -> tuple[OrderMessage, bool]:
    """The customer's message on their open order; returns it and whether it is a replay."""
    order = await _own_open_order(uow, principal, order_id, "write messages on it")
    if idempotency_key is not None:
        earlier = await _replayed(uow, order, principal, idempotency_key, body)
        if earlier is not None:
            return earlier, True
    message = OrderMessage(
        order_id=order.id,
        author="customer",
        author_id=principal.subject,
        author_name=principal.name or str(order.customer.get("full_name") or "") or None,
        body=body,
        source="message",
        at=utcnow(),
        idempotency_key=idempotency_key,
        request_hash=_request_hash(body) if idempotency_key is not None else None,
    )
    uow.session.add(message)
    orders.order_changed(uow.session, order)  # the live order page shows the message
    uow.emit(
        events.CustomerMessagePosted(
            order_id=order.id,
            customer_id=order.customer_id,
            at=message.at,
            message_id=message.id,
            author_name=message.author_name,
            body=message.body,
        ),
        key=order.id,
        version=order.version,
    )
    try:
        await uow.commit()
    except IntegrityError as exc:
        # The same key posted twice at the same moment: the other request won; a retry gets its message.
        await uow.rollback()
        if idempotency_key is None:
            raise
        raise Conflict(
            "a message with this Idempotency-Key is being posted by another request; retry",
            field="header.Idempotency-Key",
        ) from exc
    return message, False


def add_staff_message(
    session: AsyncSession, order: Order, *, message_id: str, author_name: str | None, body: str, at: datetime
) -> None:
    session.add(
        OrderMessage(
            id=message_id, order_id=order.id, author="staff", author_name=author_name, body=body, at=at
        )
    )
    orders.order_changed(session, order)  # the reply appears live on the customer's order page


def add_communication(
    session: AsyncSession, order: Order, *, message_id: str, summary: str, at: datetime
) -> None:
    session.add(
        OrderMessage(
            id=message_id,
            order_id=order.id,
            author="staff",
            author_name=None,
            body=summary,
            source="communication",
            at=at,
        )
    )


# --- the customer's files -----------------------------------------------------------


async def files_of(session: AsyncSession, principal: Principal, order_id: str) -> list[OrderFile]:
    order = await order_for(session, principal, order_id)
    rows = await session.exec(
        select(OrderFile)
        .where(OrderFile.order_id == order.id)
        .order_by(col(OrderFile.uploaded_at), col(OrderFile.id))
    )
    return list(rows.all())


async def file_to_download(
    session: AsyncSession, principal: Principal, order_id: str, file_id: str
) -> OrderFile:
    order = await order_for(session, principal, order_id)
    found = await session.get(OrderFile, file_id)
    if found is None or found.order_id != order.id:
        raise NotFound(f"no file {file_id} on order {order_id}")
    return found


async def check_can_attach(uow: UnitOfWork, principal: Principal, order_id: str) -> Order:
    """Before any byte is stored: the customer's own open order (locked for the insert)."""
    return await _own_open_order(uow, principal, order_id, "attach files to it")


def attach_files(
    uow: UnitOfWork, principal: Principal, order: Order, stored: list[StoredFile]
) -> list[OrderFile]:
    """Rows and one ``file-attached`` event per file (the files are already in place)."""
    now = utcnow()
    orders.order_changed(uow.session, order, now=now)
    added: list[OrderFile] = []
    for position, item in enumerate(stored):
        row = OrderFile(
            id=item.storage_key,
            order_id=order.id,
            file_name=item.file_name,
            media_type=item.media_type,
            size=item.size,
            sha256=item.sha256,
            storage_key=item.storage_key,
            uploaded_by=principal.subject,
            # One upload, one moment; a microsecond apart so the list keeps the order they were given in.
            uploaded_at=now + timedelta(microseconds=position),
        )
        uow.session.add(row)
        added.append(row)
        uow.emit(
            events.FileAttached(
                order_id=order.id,
                customer_id=order.customer_id,
                at=now,
                file_id=row.id,
                file_name=row.file_name,
                media_type=row.media_type,
                size=row.size,
                sha256=row.sha256,
            ),
            key=order.id,
            version=order.version,
        )
    return added


# --- read receipts ----------------------------------------------------------------------


async def record_receipt(
    uow: UnitOfWork, principal: Principal, order_id: str, item: str, document_id: str | None
) -> bool:
    """The customer opened ``item``: the first time is recorded (and announced); returns whether it was."""
    order = await orders.get_order(uow.session, principal, order_id)
    if order.customer_id != principal.subject:
        return False  # staff looking at the order are not the customer reading it
    if item == "solution":
        if document_id is not None:
            raise Unprocessable("a solution receipt has no document_id", field="body.document_id")
        if order.solution_at is None:
            raise Conflict("the order has no solution yet", field="body.item", current_status=order.status)
    else:
        if document_id is None:
            raise Unprocessable("a document receipt needs the document_id", field="body.document_id")
        document = await uow.session.get(Document, document_id)
        if document is None or document.order_id != order.id:
            raise NotFound(f"no document {document_id} on order {order_id}", field="body.document_id")
    return await _first_read(uow, order, item, document_id)


async def record_document_download(
    uow: UnitOfWork, principal: Principal, order_id: str, document_id: str
) -> None:
    """A download by the order's customer counts as reading the document."""
    order = await uow.session.get(Order, order_id)
    if order is None or order.customer_id != principal.subject:
        return
    await _first_read(uow, order, "document", document_id)


async def _first_read(uow: UnitOfWork, order: Order, item: str, document_id: str | None) -> bool:
    key = document_id or ""
    exists = (
        await uow.session.exec(
            select(ReadReceipt.id).where(
                ReadReceipt.order_id == order.id, ReadReceipt.item == item, ReadReceipt.document_id == key
            )
        )
    ).first()
    if exists is not None:
        return False
    receipt = ReadReceipt(order_id=order.id, item=item, document_id=key, read_at=utcnow())
    uow.session.add(receipt)
    uow.emit(
        events.ReadReceiptRecorded(
            order_id=order.id,
            customer_id=order.customer_id,
            at=receipt.read_at,
            item="solution" if item == "solution" else "document",
            document_id=document_id,
            read_at=receipt.read_at,
        ),
        key=order.id,
        version=order.version,
    )
    try:
        await uow.commit()
    except IntegrityError:
        await uow.rollback()  # read twice at the same moment: the other request recorded it
        return False
    return True
