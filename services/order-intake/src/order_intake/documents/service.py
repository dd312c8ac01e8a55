"""Keeping the customer's copies of case documents (A7, A9). No HTTP here.

A customer-visible attachment announced by case-handling becomes a pending
document; the fetcher copies the bytes, checks them against the announced
SHA-256 and only then makes the document available. Fetch attempts are
claimed row by row with a conditional update, so two workers never fetch the
same document at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Principal
from casebridge_shared.db import Database, utcnow
from casebridge_shared.problems import Conflict, NotFound
from order_intake.documents.models import Document, DocumentStatus
from order_intake.orders import service as orders
from order_intake.orders.models import Order


async def announce(
    session: AsyncSession,
    *,
    attachment_id: str,
    order_id: str,
    case_id: str,
    file_name: str,
    media_type: str,
    size: int,
    sha256: str,
    at: datetime,
) -> bool:
    """Record a document to fetch; False if it is already known."""
    if await session.get(Document, attachment_id) is not None:
        return False
    session.add(
        Document(
            id=attachment_id,
            order_id=order_id,
            case_id=case_id,
            file_name=file_name,
            media_type=media_type,
            size=size,
            sha256=sha256.lower(),
            added_at=at,
            next_attempt_at=utcnow(),
        )
    )
    return True


async def documents_of(session: AsyncSession, principal: Principal, order_id: str) -> list[Document]:
    order = await orders.get_order(session, principal, order_id)  # 404 for someone else's order
    rows = await session.exec(
        select(Document)
        .where(Document.order_id == order.id)
        .order_by(col(Document.added_at), col(Document.id))
    )
    return list(rows.all())


async def document_to_download(
    session: AsyncSession, principal: Principal, order_id: str, document_id: str
) -> Document:
    order = await orders.get_order(session, principal, order_id)
    document = await session.get(Document, document_id)
    if document is None or document.order_id != order.id:
        raise NotFound(f"no document {document_id} on order {order_id}")
    if document.status != DocumentStatus.AVAILABLE:
        raise Conflict(
            f"the document is not available for download; it is {document.status}", state=document.status
        )
    return document


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def storage_key(document: Document) -> str:
    # The id is ours (a UUID from case-handling, checked on the way in), never a user's file name.
    return document.id


# -- the fetcher's bookkeeping ------------------------------------------------


async def claim_due(db: Database, *, now: datetime, lease: timedelta, limit: int) -> list[Document]:
    """Documents due for a fetch attempt, each leased to this worker until ``now + lease``."""
    async with db.session() as session:
        candidates = list(
            (
                await session.exec(
                    select(Document)
                    .where(
                        Document.status == DocumentStatus.PENDING,
                        col(Document.next_attempt_at) <= now,
                    )
                    .order_by(col(Document.next_attempt_at))
                    .limit(limit)
                )
            ).all()
        )
    claimed: list[Document] = []
    for document in candidates:
        async with db.write_session() as session:
            result = await session.execute(
                update(Document)
                .where(
                    col(Document.id) == document.id,
                    col(Document.status) == DocumentStatus.PENDING,
                    # Another worker's lease moved it past ``now``.
                    col(Document.next_attempt_at) <= now,
                )
                .values(next_attempt_at=now + lease)
            )
            await session.commit()
        if _rowcount(result) == 1:  # another worker did not get there first
            claimed.append(document)
    return claimed


async def _set(db: Database, document_id: str, **values: object) -> None:
    async with db.write_session() as session:
        await session.execute(update(Document).where(col(Document.id) == document_id).values(**values))
        await session.commit()


async def mark_available(db: Database, document: Document) -> None:
    """The document can be downloaded; the order's live page learns it in the same transaction."""
    async with db.write_session() as session:
        await session.execute(
            update(Document)
            .where(col(Document.id) == document.id)
            .values(
                status=DocumentStatus.AVAILABLE,
                attempts=document.attempts + 1,
                available_at=utcnow(),
                last_error=None,
            )
        )
        order = await session.get(Order, document.order_id)
        if order is not None:
            orders.order_changed(session, order)
        await session.commit()


async def mark_retry(db: Database, document: Document, error: str, *, retry_at: datetime) -> None:
    await _set(
        db, document.id, attempts=document.attempts + 1, last_error=error[:2000], next_attempt_at=retry_at
    )


async def mark_rejected(db: Database, document: Document, error: str) -> None:
    await _set(
        db,
        document.id,
        status=DocumentStatus.REJECTED,
        attempts=document.attempts + 1,
        last_error=error[:2000],
    )


async def requeue_rejected(db: Database, document_id: str | None = None) -> int:
    """Operator command: try rejected documents again (after case-handling fixed the file)."""
    async with db.write_session() as session:
        query = update(Document).where(col(Document.status) == DocumentStatus.REJECTED)
        if document_id is not None:
            query = query.where(col(Document.id) == document_id)
        result = await session.execute(
            query.values(status=DocumentStatus.PENDING, next_attempt_at=utcnow(), attempts=0)
        )
        await session.commit()
    return _rowcount(result)


async def count_pending(db: Database) -> int:
    async with db.session() as session:
        total = (
            await session.exec(
                select(func.count()).select_from(Document).where(Document.status == DocumentStatus.PENDING)
            )
        ).one()
    return int(total)
