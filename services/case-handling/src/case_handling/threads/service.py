"""The order's thread in case-handling: the customer's messages, files and read receipts
arrive as order-intake's events; staff replies leave as case events. No HTTP here.

The customer's files are announced without their content: each becomes a pending
fetch that the worker's ``CustomerFileFetcher`` copies from order-intake, checks
against the announced SHA-256 and only then adds to the case as an attachment with
origin "customer" (the mirror of order-intake's documents, ADR-0030).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from case_handling.cases import events
from case_handling.cases import service as cases
from case_handling.cases.models import (
    Attachment,
    Case,
    CaseEntry,
    CaseMessage,
    CaseReceipt,
    CaseStatus,
    CustomerFileFetch,
    CustomerFileFetchStatus,
    DocumentReceipt,
    MessageRead,
    Receipts,
)
from case_handling.cases.rules import CaseWrite, authorize_write
from case_handling.intake.events import CustomerFile, CustomerMessage, ReadReceipt, ThreadEvent
from casebridge_shared.auth import Principal
from casebridge_shared.db import Database, utcnow
from casebridge_shared.files import clean_file_name
from casebridge_shared.idempotency import check_same_request, request_hash
from casebridge_shared.inbox import PoisonEvent
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict

# --- from order-intake's events ---------------------------------------------------------


async def _case_of(uow: UnitOfWork, event: ThreadEvent, what: str) -> Case:
    case = await cases.case_for_order(uow, event.order_id)
    if case is None or case.customer_id != event.customer_id:
        # order-placed comes first on the order's partition; anything else is not ours to guess.
        raise PoisonEvent(
            f"does not fit the order's history: {what} for order {event.order_id} of customer "
            f"{event.customer_id}, which has no case here for that customer"
        )
    return case


async def customer_message(uow: UnitOfWork, message: CustomerMessage) -> None:
    case = await _case_of(uow, message, "a message")
    if await uow.session.get(CaseMessage, message.message_id) is not None:
        return
    uow.session.add(
        CaseMessage(
            id=message.message_id,
            case_id=case.id,
            author="customer",
            author_id=message.customer_id,
            author_name=message.author_name,
            body=message.body,
            at=message.at,
        )
    )
    # On the timeline too: staff see when the customer wrote, and the console's live feed (which
    # follows timeline entries) brings the message onto an open case page at once.
    uow.session.add(
        CaseEntry(
            case_id=case.id,
            kind="customer_message",
            at=message.at,
            author_id=message.customer_id,
            author_name=message.author_name,
            status=case.status,
            customer_visible=True,
            data={"message_id": message.message_id},
        )
    )
    # Whoever works the case hears of it (the notifier's routing); the text is not in the event.
    uow.emit(
        events.CustomerMessageReceived(
            case_id=case.id,
            order_id=case.order_id,
            customer_id=case.customer_id,
            status=case.status,
            at=message.at,
            message_id=message.message_id,
            assignee_id=case.assignee_id,
            product_category=case.product_category,
        ),
        key=case.id,
        version=case.version,
    )


async def customer_file(uow: UnitOfWork, announced: CustomerFile) -> None:
    case = await _case_of(uow, announced, "a file")
    if await uow.session.get(CustomerFileFetch, announced.file_id) is not None:
        return
    uow.session.add(
        CustomerFileFetch(
            id=announced.file_id,
            case_id=case.id,
            order_id=announced.order_id,
            customer_id=announced.customer_id,
            file_name=clean_file_name(announced.file_name) or f"file-{announced.file_id}",
            media_type=announced.media_type,
            size=announced.size,
            sha256=announced.sha256.lower(),
            uploaded_at=announced.at,
            next_attempt_at=utcnow(),
        )
    )


async def read_receipt(uow: UnitOfWork, receipt: ReadReceipt) -> None:
    case = await _case_of(uow, receipt, "a read receipt")
    key = receipt.document_id or ""
    exists = (
        await uow.session.exec(
            select(CaseReceipt.id).where(
                CaseReceipt.case_id == case.id,
                CaseReceipt.item == receipt.item,
                CaseReceipt.document_id == key,
            )
        )
    ).first()
    if exists is None:
        uow.session.add(
            CaseReceipt(case_id=case.id, item=receipt.item, document_id=key, read_at=receipt.read_at)
        )


# --- staff ------------------------------------------------------------------------------------


async def post_reply(
    uow: UnitOfWork, principal: Principal, case_id: str, body: str, idempotency_key: str | None = None
) -> tuple[CaseMessage, bool]:
    """A staff reply to the customer, on an open case, by whom may record communications.

    Returns the message and whether it is a replay: the same author's earlier reply with
    this ``idempotency_key`` (and the same body), which is answered again, not posted twice.
    """
    case = await cases.get_case(uow.session, case_id)
    cases.require_open(case)
    authorize_write(principal, case.assignee_id, CaseWrite.COMMUNICATION)
    fingerprint = request_hash(body)
    if idempotency_key is not None:
        earlier = (
            await uow.session.exec(
                select(CaseMessage).where(
                    CaseMessage.case_id == case.id,
                    CaseMessage.author_id == principal.subject,
                    CaseMessage.idempotency_key == idempotency_key,
                )
            )
        ).first()
        if earlier is not None:
            check_same_request(earlier.request_hash, fingerprint, "message")
            return earlier, True
    message = CaseMessage(
        case_id=case.id,
        author="staff",
        author_id=principal.subject,
        author_name=principal.name or principal.email,
        body=body,
        at=utcnow(),
        idempotency_key=idempotency_key,
        request_hash=fingerprint if idempotency_key is not None else None,
    )
    uow.session.add(message)
    uow.emit(
        events.StaffReplied(
            case_id=case.id,
            order_id=case.order_id,
            customer_id=case.customer_id,
            status=case.status,
            at=message.at,
            message_id=message.id,
            author_id=principal.subject,
            author_name=message.author_name,
            body=body,
        ),
        key=case.id,
        version=case.version,
    )
    try:
        await uow.commit()
    except IntegrityError as exc:
        # The same key posted twice at the same moment: the other request won; a retry gets its reply.
        await uow.rollback()
        if idempotency_key is None:
            raise
        raise Conflict(
            "a reply with this Idempotency-Key is being posted by another request; retry",
            field="header.Idempotency-Key",
        ) from exc
    return message, False


async def thread(session: AsyncSession, case: Case) -> list[MessageRead]:
    """Messages both ways and the customer-visible communications, oldest first."""
    messages = await session.exec(select(CaseMessage).where(CaseMessage.case_id == case.id))
    items = [
        MessageRead(
            id=m.id,
            author=m.author,
            author_name=m.author_name,
            body=m.body,
            at=m.at,
            source="message",
        )
        for m in messages
    ]
    communications = await session.exec(
        select(CaseEntry).where(
            CaseEntry.case_id == case.id, CaseEntry.kind == "communication", col(CaseEntry.customer_visible)
        )
    )
    items += [
        MessageRead(
            id=f"communication-{e.id}",
            author="staff",
            author_name=e.author_name,
            body=str(e.data.get("summary", "")),
            at=e.at,
            source="communication",
        )
        for e in communications
    ]
    return sorted(items, key=lambda m: (m.at, m.id))


async def receipts_of(session: AsyncSession, case_id: str) -> Receipts:
    rows = (await session.exec(select(CaseReceipt).where(CaseReceipt.case_id == case_id))).all()
    solution = next((r.read_at for r in rows if r.item == "solution"), None)
    documents = [
        DocumentReceipt(attachment_id=r.document_id, read_at=r.read_at)
        for r in sorted(rows, key=lambda r: r.read_at)
        if r.item == "document"
    ]
    return Receipts(solution_read_at=solution, documents=documents)


# --- the fetcher's bookkeeping ---------------------------------------------------------------


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def claim_due(db: Database, *, now: datetime, lease: timedelta, limit: int) -> list[CustomerFileFetch]:
    """Fetches due now, each leased to this worker until ``now + lease`` (a conditional update)."""
    async with db.session() as session:
        candidates: Sequence[CustomerFileFetch] = (
            await session.exec(
                select(CustomerFileFetch)
                .where(
                    CustomerFileFetch.status == CustomerFileFetchStatus.PENDING,
                    col(CustomerFileFetch.next_attempt_at) <= now,
                )
                .order_by(col(CustomerFileFetch.next_attempt_at))
                .limit(limit)
            )
        ).all()
    claimed: list[CustomerFileFetch] = []
    for fetch in candidates:
        async with db.write_session() as session:
            result = await session.execute(
                update(CustomerFileFetch)
                .where(
                    col(CustomerFileFetch.id) == fetch.id,
                    col(CustomerFileFetch.status) == CustomerFileFetchStatus.PENDING,
                    col(CustomerFileFetch.next_attempt_at) <= now,
                )
                .values(next_attempt_at=now + lease)
            )
            await session.commit()
        if _rowcount(result) == 1:
            claimed.append(fetch)
    return claimed


async def _set(db: Database, fetch_id: str, **values: object) -> None:
    async with db.write_session() as session:
        await session.execute(
            update(CustomerFileFetch).where(col(CustomerFileFetch.id) == fetch_id).values(**values)
        )
        await session.commit()


async def mark_stored(db: Database, fetch: CustomerFileFetch, storage_key: str) -> bool:
    """The file is in place: it becomes the case's attachment in the same transaction as the
    fetch is marked done; False if another worker got there first (its file is then ours to remove)."""
    async with db.write_session() as session:
        result = await session.execute(
            update(CustomerFileFetch)
            .where(
                col(CustomerFileFetch.id) == fetch.id,
                col(CustomerFileFetch.status) == CustomerFileFetchStatus.PENDING,
            )
            .values(status=CustomerFileFetchStatus.STORED, attempts=fetch.attempts + 1, last_error=None)
        )
        if _rowcount(result) != 1:
            await session.rollback()
            return False
        case = await session.get(Case, fetch.case_id)
        session.add(
            Attachment(
                id=fetch.id,
                case_id=fetch.case_id,
                file_name=fetch.file_name,
                media_type=fetch.media_type,
                size=fetch.size,
                sha256=fetch.sha256,
                visibility="customer",
                storage_key=storage_key,
                uploaded_by=f"customer:{fetch.customer_id}",
                uploaded_at=fetch.uploaded_at,
                origin="customer",
            )
        )
        session.add(
            CaseEntry(
                case_id=fetch.case_id,
                kind="customer_file",
                at=utcnow(),
                author_id=fetch.customer_id,
                author_name=None,
                status=case.status if case is not None else CaseStatus.NEW,
                customer_visible=True,
                data={"attachment_id": fetch.id, "file_name": fetch.file_name, "sha256": fetch.sha256},
            )
        )
        await session.commit()
    return True


async def mark_retry(db: Database, fetch: CustomerFileFetch, error: str, *, retry_at: datetime) -> None:
    await _set(db, fetch.id, attempts=fetch.attempts + 1, last_error=error[:2000], next_attempt_at=retry_at)


async def mark_rejected(db: Database, fetch: CustomerFileFetch, error: str) -> None:
    await _set(
        db,
        fetch.id,
        status=CustomerFileFetchStatus.REJECTED,
        attempts=fetch.attempts + 1,
        last_error=error[:2000],
    )


async def count_pending(db: Database) -> int:
    async with db.session() as session:
        total = (
            await session.exec(
                select(func.count())
                .select_from(CustomerFileFetch)
                .where(CustomerFileFetch.status == CustomerFileFetchStatus.PENDING)
            )
        ).one()
    return int(total)
