"""Every write, read and login becomes a journal entry first, and the tables are its projection (B5, B8).

``record_change``, ``record_read`` and ``record_login`` append the entry and then
apply it with ``project``, the same function ``rebuild`` replays over the whole
journal: the live tables and the rebuilt ones come from one code path, so they
cannot drift apart. Entries hold plain JSON (the rows' ``model_dump(mode="json")``)
so an auditor can read them without our code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlmodel import SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Principal
from casebridge_shared.db import queue_insert, table_of, utcnow
from customer_ledger.access.models import ChangeRecord, LoginRecord, ReadRecord, RecordCorrection
from customer_ledger.customers.models import Association, Customer, Demand, Payment, ProgressEntry
from customer_ledger.grants.models import Grant
from customer_ledger.journal import service as journal
from customer_ledger.journal.models import JournalEntry

# Journal table names -> the view each change entry updates.
TABLES: dict[str, type[SQLModel]] = {
    "customers": Customer,
    "demands": Demand,
    "associations": Association,
    "progress": ProgressEntry,
    "payments": Payment,
    "grants": Grant,
}
VIEWS: tuple[type[SQLModel], ...] = (
    *TABLES.values(),
    ChangeRecord,
    ReadRecord,
    LoginRecord,
    RecordCorrection,
)

Operation = Literal["insert", "update", "delete"]

_CHANGES = table_of(ChangeRecord)
_READS = table_of(ReadRecord)
_LOGINS = table_of(LoginRecord)
_CORRECTIONS = table_of(RecordCorrection)


@dataclass(frozen=True)
class Actor:
    """Who made a change or a read: a signed-in person, or an event stream acting for the system."""

    subject: str
    roles: tuple[str, ...]
    department: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(
            subject=principal.subject,
            roles=tuple(sorted(r.value for r in principal.roles)),
            department=principal.department.value if principal.department else None,
        )

    @classmethod
    def system(cls, source: str) -> Actor:
        return cls(subject=source, roles=("system",))

    def as_entry(self) -> dict[str, Any]:
        return {"subject": self.subject, "roles": list(self.roles), "department": self.department}


def dump(row: SQLModel) -> dict[str, Any]:
    return row.model_dump(mode="json")


def _iso(value: datetime) -> str:
    return value.isoformat()


async def record_change(
    session: AsyncSession,
    actor: Actor,
    *,
    table: str,
    operation: Operation,
    before: SQLModel | None,
    after: SQLModel | None,
    reason: str | None = None,
    feedback_ref: str | None = None,
    source: str | None = None,
    at: datetime | None = None,
) -> int:
    """Journal one change of one row and apply it; the caller commits. Returns the entry's index."""
    before_data = dump(before) if before is not None else None
    after_data = dump(after) if after is not None else None
    shown = after_data or before_data or {}
    body = {
        "type": "change",
        "table": table,
        "operation": operation,
        "record_id": shown["id"],
        "customer_id": shown["id"] if table == "customers" else shown.get("customer_id"),
        "before": before_data,
        "after": after_data,
        "by": actor.as_entry(),
        "reason": reason,
        "feedback_ref": feedback_ref,
        "source": source,
        "at": _iso(at or utcnow()),
    }
    [entry] = await journal.append(session, [("change", body)])
    await project(session, entry.index, body)
    return entry.index


async def record_read(
    session: AsyncSession,
    actor: Actor,
    what: str,
    *,
    customers: list[str] | None = None,
    query: dict[str, Any] | None = None,
) -> int:
    """Journal that ``actor`` read ``what`` of ``customers`` (none: not customer data)."""
    body = {
        "type": "read",
        "reader": actor.as_entry(),
        "what": what,
        "customers": sorted(set(customers or [])),
        "query": query or {},
        "at": _iso(utcnow()),
    }
    [entry] = await journal.append(session, [("read", body)])
    await project(session, entry.index, body)
    return entry.index


async def record_login(session: AsyncSession, body: dict[str, Any]) -> int:
    [entry] = await journal.append(session, [("login", {"type": "login", **body})])
    await project(session, entry.index, {"type": "login", **body})
    return entry.index


async def record_correction(
    session: AsyncSession,
    actor: Actor,
    *,
    of_index: int,
    record: str,
    corrected: dict[str, Any],
    reason: str,
    feedback_ref: str | None,
) -> int:
    """Journal an admin's correction of access record ``of_index`` (which itself never changes)."""
    body = {
        "type": "correction",
        "of_index": of_index,
        "record": record,
        "corrected": corrected,
        "by": actor.as_entry(),
        "reason": reason,
        "feedback_ref": feedback_ref,
        "at": _iso(utcnow()),
    }
    [entry] = await journal.append(session, [("correction", body)])
    await project(session, entry.index, body)
    return entry.index


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def project(session: AsyncSession, index: int, body: dict[str, Any]) -> None:
    """Apply journal entry ``index`` to the tables. Entries of other types change no table.

    New rows are queued to be written with the journal's own rows (one insert per
    table when the transaction commits, or before a query of their table), not
    added as ORM objects: a group commit's requests would otherwise write them
    one statement each, whenever the next request asks its first question.
    """
    kind = body.get("type")
    if kind == "change":
        await _apply_change(session, index, body)
    elif kind == "read":
        reader = body["reader"]
        customers: list[str | None] = list(body["customers"]) or [None]
        at = _parse_time(body["at"])
        for position, customer_id in enumerate(customers):
            queue_insert(
                session,
                _READS,
                {
                    "journal_index": index,
                    "position": position,
                    "customer_id": customer_id,
                    "what": body["what"][:64],
                    "reader": reader["subject"],
                    "department": reader["department"],
                    "at": at,
                },
            )
    elif kind == "correction":
        queue_insert(
            session,
            _CORRECTIONS,
            {
                "journal_index": index,
                "of_index": body["of_index"],
                "record": body["record"],
                "corrected": body["corrected"],
                "reason": body["reason"],
                "feedback_ref": body["feedback_ref"],
                "corrected_by": body["by"]["subject"],
                "at": _parse_time(body["at"]),
            },
        )
    elif kind == "login":
        queue_insert(
            session,
            _LOGINS,
            {
                "journal_index": index,
                "user_id": body["user_id"],
                "email": body["email"],
                "outcome": body["outcome"],
                "reason": body["reason"],
                "department": body.get("department"),
                "client_ip": body["client_ip"],
                "user_agent": body["user_agent"],
                "at": _parse_time(body["at"]),
            },
        )


async def _apply_change(session: AsyncSession, index: int, body: dict[str, Any]) -> None:
    model = TABLES[body["table"]]
    operation = body["operation"]
    if operation == "delete":
        existing = await session.get(model, body["record_id"])
        if existing is not None:
            await session.delete(existing)
    else:
        row = model.model_validate(body["after"])
        if operation == "insert":
            queue_insert(session, table_of(model), row.model_dump())
        else:
            await session.merge(row)
    by = body["by"]
    queue_insert(
        session,
        _CHANGES,
        {
            "journal_index": index,
            "table": body["table"],
            "operation": operation,
            "record_id": body["record_id"],
            "customer_id": body["customer_id"],
            "before": body["before"],
            "after": body["after"],
            "changed_by": by["subject"],
            "department": by["department"],
            "reason": body["reason"],
            "feedback_ref": body["feedback_ref"],
            "at": _parse_time(body["at"]),
        },
    )


async def snapshot(session: AsyncSession) -> dict[str, list[dict[str, Any]]]:
    """Every view's rows as JSON, in primary-key order: what a rebuild must reproduce."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for view in VIEWS:
        keys = [col(c) for c in view.__table__.primary_key.columns]  # type: ignore[attr-defined]
        rows = (await session.execute(select(view).order_by(*keys))).scalars().all()
        tables[str(view.__tablename__)] = [dump(r) for r in rows]
    return tables


def differences(live: dict[str, list[dict[str, Any]]], rebuilt: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    found: list[str] = []
    for table, rows in live.items():
        other = rebuilt.get(table, [])
        if rows == other:
            continue
        found.append(f"{table}: {len(rows)} live rows, {len(other)} rebuilt")
        for mine, theirs in zip(rows, other, strict=False):
            if mine != theirs:
                found.append(f"{table}: first difference at {mine} != {theirs}")
                break
    return found


async def rebuild(session: AsyncSession, *, chunk: int = 2000) -> int:
    """Empty every view and replay the whole journal into it; the caller commits. Returns entries read.

    The journal's head is locked first, so no append lands half-way through.
    """
    await journal.lock(session)
    for view in reversed(VIEWS):
        await session.execute(delete(view))
    await session.flush()
    start, replayed = 0, 0
    while True:
        rows = (
            await session.execute(
                select(col(JournalEntry.index), col(JournalEntry.body))
                .where(col(JournalEntry.index) >= start)
                .order_by(col(JournalEntry.index))
                .limit(chunk)
            )
        ).all()
        if not rows:
            return replayed
        for index, text in rows:
            await project(session, index, json.loads(text))
        # Each chunk is written before the next, so a later delete or update finds its row.
        await session.flush()
        replayed += len(rows)
        start = rows[-1][0] + 1
