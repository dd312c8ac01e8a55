"""Recording logins and account changes in the journal, and the admin's audit query (B5, B6).

Each identity event becomes a journal entry in the same transaction as its
inbox row, so a login is on record exactly once; login records are the
queryable view of those entries. An admin's audit query is itself a read and
is journaled before the answer is returned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Principal
from casebridge_shared.db import utcnow
from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import Handler
from casebridge_shared.outbox import UnitOfWork
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
from customer_ledger.access.models import LoginRecord
from customer_ledger.journal import service as journal


def _iso(value: datetime) -> str:
    return value.isoformat()


async def _login(uow: UnitOfWork, event: CloudEvent, record: LoginRecord) -> None:
    body: dict[str, Any] = {
        "type": "login",
        "event_id": event.id,
        "outcome": record.outcome,
        "user_id": record.user_id,
        "email": record.email,
        "reason": record.reason,
        "client_ip": record.client_ip,
        "user_agent": record.user_agent,
        "at": _iso(record.at),
    }
    [entry] = await journal.append(uow.session, [("login", body)])
    record.journal_index = entry.index
    uow.session.add(record)


async def login_succeeded(uow: UnitOfWork, event: CloudEvent, login: LoginSucceeded) -> None:
    record = LoginRecord(
        user_id=login.user_id,
        email=login.email,
        outcome="success",
        client_ip=login.client_ip,
        user_agent=login.user_agent,
        at=login.at,
        journal_index=-1,
    )
    await _login(uow, event, record)


async def login_failed(uow: UnitOfWork, event: CloudEvent, login: LoginFailed) -> None:
    record = LoginRecord(
        user_id=login.user_id,
        email=login.email,
        outcome="failure",
        reason=login.reason[:64],
        client_ip=login.client_ip,
        user_agent=login.user_agent,
        at=login.at,
        journal_index=-1,
    )
    await _login(uow, event, record)


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
        "at": _iso(event.time),
    }
    await journal.append(uow.session, [("account", body)])


HANDLERS: dict[str, Handler] = {
    LOGIN_SUCCEEDED: login_succeeded,
    LOGIN_FAILED: login_failed,
    USER_CREATED: account_changed,
    USER_UPDATED: account_changed,
    ROLES_CHANGED: account_changed,
}


async def record_read(session: AsyncSession, reader: Principal, what: str, query: dict[str, Any]) -> int:
    """Journal that ``reader`` read ``what`` with ``query``; returns the entry's index."""
    body = {
        "type": "read",
        "reader": reader.subject,
        "roles": sorted(r.value for r in reader.roles),
        "department": reader.department.value if reader.department else None,
        "what": what,
        "query": query,
        "at": _iso(utcnow()),
    }
    [entry] = await journal.append(session, [("read", body)])
    return entry.index


async def list_logins(
    session: AsyncSession,
    *,
    user_id: str | None,
    email: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[LoginRecord], int]:
    query = select(LoginRecord)
    if user_id:
        query = query.where(LoginRecord.user_id == user_id)
    if email:
        query = query.where(func.lower(col(LoginRecord.email)) == email.lower())
    if outcome:
        query = query.where(LoginRecord.outcome == outcome)
    if since is not None:
        query = query.where(col(LoginRecord.at) >= since)
    if until is not None:
        query = query.where(col(LoginRecord.at) < until)
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = await session.exec(
        query.order_by(col(LoginRecord.at).desc(), col(LoginRecord.id)).limit(limit).offset(offset)
    )
    return list(rows.all()), int(total)
