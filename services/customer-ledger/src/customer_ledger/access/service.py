"""Recording logins and account changes, and the admin's audit queries (B5, B6).

Each identity event becomes a journal entry in the same transaction as its
inbox row, so a login is on record exactly once; login, change and read
records are the queryable views of the journal's entries. An audit query is
itself a read and is journaled before the answer is returned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from casebridge_shared.auth import Principal
from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import Handler
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.pagination import KeyPart, Keyset, PageParams
from casebridge_shared.problems import NotFound, Unprocessable
from customer_ledger.access.events import (
    LOGIN_FAILED,
    LOGIN_SUCCEEDED,
    ROLES_CHANGED,
    USER_CREATED,
    USER_UPDATED,
    LoginFailed,
    LoginSucceeded,
    UserSnapshot,
)
from customer_ledger.access.models import (
    ChangeRecord,
    CorrectionCreate,
    LoginRecord,
    ReadRecord,
    RecordCorrection,
)
from customer_ledger.journal import service as journal
from customer_ledger.records import Actor, record_correction, record_login

Row = TypeVar("Row", bound=SQLModel)


async def login_succeeded(uow: UnitOfWork, event: CloudEvent, login: LoginSucceeded) -> None:
    await record_login(
        uow.session,
        {
            "event_id": event.id,
            "outcome": "success",
            "user_id": login.user_id,
            "email": login.email,
            "reason": None,
            "department": login.department,
            "client_ip": login.client_ip,
            "user_agent": login.user_agent,
            "at": login.at.isoformat(),
        },
    )


async def login_failed(uow: UnitOfWork, event: CloudEvent, login: LoginFailed) -> None:
    await record_login(
        uow.session,
        {
            "event_id": event.id,
            "outcome": "failure",
            "user_id": login.user_id,
            "email": login.email,
            "reason": login.reason[:64],
            "department": None,
            "client_ip": login.client_ip,
            "user_agent": login.user_agent,
            "at": login.at.isoformat(),
        },
    )


async def account_changed(uow: UnitOfWork, event: CloudEvent, user: UserSnapshot) -> None:
    body = {
        "type": "account",
        "event_id": event.id,
        "event_type": event.type,
        "user_id": user.user_id,
        "email": user.email,
        "roles": sorted(user.roles),
        "department": user.department,
        "active": user.active,
        "version": user.version,
        "at": event.time.isoformat(),
    }
    await journal.append(uow.session, [("account", body)])


HANDLERS: dict[str, Handler] = {
    LOGIN_SUCCEEDED: login_succeeded,
    LOGIN_FAILED: login_failed,
    USER_CREATED: account_changed,
    USER_UPDATED: account_changed,
    ROLES_CHANGED: account_changed,
}


async def _page(
    session: AsyncSession,
    query: SelectOfScalar[Row],
    keyset: Keyset,
    key_of: Callable[[Row], tuple[Any, ...]],
    page: PageParams,
) -> tuple[list[Row], int, str | None]:
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = list((await session.exec(keyset.window(query, page))).all())
    items, next_cursor = keyset.cut(rows, page, key_of)
    return items, int(total), next_cursor


# Each trail newest first; the journal index (with a read's position in its entry) is unique.
LOGIN_KEYSET = Keyset(
    KeyPart(col(LoginRecord.at), datetime, descending=True),
    KeyPart(col(LoginRecord.journal_index), int, descending=True),
)
CHANGE_KEYSET = Keyset(KeyPart(col(ChangeRecord.journal_index), int, descending=True))
READ_KEYSET = Keyset(
    KeyPart(col(ReadRecord.journal_index), int, descending=True), KeyPart(col(ReadRecord.position), int)
)


def _filtered(
    model: type[Row],
    equal: dict[Any, str | None],
    at: Any,
    since: datetime | None,
    until: datetime | None,
) -> SelectOfScalar[Row]:
    """``model`` rows whose columns equal the given values (None: any) and whose time is in range."""
    query = select(model)
    for column, value in equal.items():
        if value:
            query = query.where(column == value)
    if since is not None:
        query = query.where(at >= since)
    if until is not None:
        query = query.where(at < until)
    return query


async def list_logins(
    session: AsyncSession,
    *,
    user_id: str | None,
    email: str | None,
    department: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    page: PageParams,
) -> tuple[list[LoginRecord], int, str | None]:
    equal = {
        col(LoginRecord.user_id): user_id,
        func.lower(col(LoginRecord.email)): email.lower() if email else None,
        col(LoginRecord.department): department,
        col(LoginRecord.outcome): outcome,
    }
    query = _filtered(LoginRecord, equal, col(LoginRecord.at), since, until)
    return await _page(session, query, LOGIN_KEYSET, lambda r: (r.at, r.journal_index), page)


async def list_changes(
    session: AsyncSession,
    *,
    customer_id: str | None,
    user_id: str | None,
    department: str | None,
    table: str | None,
    since: datetime | None,
    until: datetime | None,
    page: PageParams,
) -> tuple[list[ChangeRecord], int, str | None]:
    equal = {
        col(ChangeRecord.customer_id): customer_id,
        col(ChangeRecord.changed_by): user_id,
        col(ChangeRecord.department): department,
        col(ChangeRecord.table): table,
    }
    query = _filtered(ChangeRecord, equal, col(ChangeRecord.at), since, until)
    return await _page(session, query, CHANGE_KEYSET, lambda r: (r.journal_index,), page)


async def list_reads(
    session: AsyncSession,
    *,
    customer_id: str | None,
    user_id: str | None,
    department: str | None,
    what: str | None,
    since: datetime | None,
    until: datetime | None,
    page: PageParams,
) -> tuple[list[ReadRecord], int, str | None]:
    equal = {
        col(ReadRecord.customer_id): customer_id,
        col(ReadRecord.reader): user_id,
        col(ReadRecord.department): department,
        col(ReadRecord.what): what,
    }
    query = _filtered(ReadRecord, equal, col(ReadRecord.at), since, until)
    return await _page(session, query, READ_KEYSET, lambda r: (r.journal_index, r.position), page)


# The access records an admin may correct, and the fields each has.
CORRECTABLE: dict[str, tuple[type[SQLModel], frozenset[str]]] = {
    "login": (LoginRecord, frozenset(LoginRecord.model_fields) - {"journal_index"}),
    "change": (ChangeRecord, frozenset(ChangeRecord.model_fields) - {"journal_index"}),
    "read": (ReadRecord, frozenset(ReadRecord.model_fields) - {"journal_index", "position"}),
}


async def correct(
    session: AsyncSession, admin: Principal, index: int, body: CorrectionCreate
) -> RecordCorrection:
    """Record that access record ``index`` should read differently (B3, B7); it stays as it was journaled."""
    for record, (model, fields) in CORRECTABLE.items():
        found = await session.exec(select(model).where(model.journal_index == index))  # type: ignore[attr-defined]
        if found.first() is None:
            continue
        unknown = sorted(set(body.corrected) - fields)
        if unknown:
            raise Unprocessable(
                f"a {record} record has no field(s) {', '.join(unknown)}", field="body.corrected"
            )
        at = await record_correction(
            session,
            Actor.of(admin),
            of_index=index,
            record=record,
            corrected=body.corrected,
            reason=body.reason,
            feedback_ref=body.feedback_ref,
        )
        correction = await session.get(RecordCorrection, at)
        assert correction is not None
        return correction
    raise NotFound(f"no login, change or read record at journal index {index}")


async def corrections_of(session: AsyncSession, indexes: list[int]) -> dict[int, list[RecordCorrection]]:
    if not indexes:
        return {}
    rows = await session.exec(
        select(RecordCorrection)
        .where(col(RecordCorrection.of_index).in_(set(indexes)))
        .order_by(col(RecordCorrection.journal_index))
    )
    found: dict[int, list[RecordCorrection]] = {}
    for row in rows:
        found.setdefault(row.of_index, []).append(row)
    return found
