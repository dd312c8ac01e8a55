"""Routes: the admin's audit queries over access information (SPEC B5, B6, B7).

Each query is answered only after the read itself is in the journal: an
admin's reads are on record like everyone's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query

from casebridge_shared.auth import Department, Principal, Role, require_roles
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.pagination import Page, PageDep, PageParams
from casebridge_shared.params import BigIndex
from casebridge_shared.problems import PROBLEM_RESPONSES
from customer_ledger.access import service
from customer_ledger.access.models import (
    ChangeRecordRead,
    CorrectionCreate,
    CorrectionRead,
    LoginRecordRead,
    ReadRecordRead,
)
from customer_ledger.deps import WritesDep
from customer_ledger.records import Actor, record_read

R = TypeVar("R", LoginRecordRead, ChangeRecordRead, ReadRecordRead)

router = APIRouter(prefix="/audit", tags=["audit"], responses=PROBLEM_RESPONSES)

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
# Reading the audit trail: admins, and auditors (people or machine clients, e.g. an accounting
# system's ledger-exporter) who read and change nothing.
AuditReader = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.AUDITOR))]
UserId = Annotated[str | None, Query(max_length=64, description="Who logged in, changed or read")]
CustomerId = Annotated[str | None, Query(max_length=36)]
Since = Annotated[datetime | None, Query(description="From this time (inclusive)")]
Until = Annotated[datetime | None, Query(description="Before this time")]
Table = Literal["customers", "demands", "associations", "progress", "payments", "grants"]


async def _answer(
    writes: GroupCommit,
    admin: Principal,
    what: str,
    model: type[R],
    list_records: Callable[..., Awaitable[tuple[Sequence[Any], int]]],
    filters: dict[str, Any],
    page: PageParams,
) -> Page[R]:
    """The page of ``list_records(session, **filters)``, with each record's corrections,
    once the admin's query is itself journaled."""

    async def query_and_record(uow: UnitOfWork) -> Page[R]:
        session = uow.session
        rows, total = await list_records(session, **filters, limit=page.limit, offset=page.offset)
        corrections = await service.corrections_of(session, [r.journal_index for r in rows])
        items = []
        for row in rows:
            item = model.model_validate(row)
            item.corrections = [
                CorrectionRead.model_validate(c) for c in corrections.get(row.journal_index, [])
            ]
            items.append(item)
        asked = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in filters.items()}
        await record_read(
            session,
            Actor.of(admin),
            what,
            customers=[c for r in rows if (c := getattr(r, "customer_id", None))],
            query={**asked, "limit": page.limit, "offset": page.offset},
        )
        return Page[R](items=items, total=total, limit=page.limit, offset=page.offset)

    return await writes.run(query_and_record)


@router.get("/logins", response_model=Page[LoginRecordRead], summary="Logins, successful and failed")
async def list_logins(
    admin: AuditReader,
    writes: WritesDep,
    page: PageDep,
    user_id: UserId = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    department: Department | None = None,
    outcome: Literal["success", "failure"] | None = None,
    since: Since = None,
    until: Until = None,
) -> Page[LoginRecordRead]:
    filters: dict[str, Any] = {
        "user_id": user_id,
        "email": email,
        "department": department.value if department else None,
        "outcome": outcome,
        "since": since,
        "until": until,
    }
    return await _answer(
        writes,
        admin,
        "logins",
        LoginRecordRead,
        service.list_logins,
        filters,
        page,
    )


@router.get(
    "/changes",
    response_model=Page[ChangeRecordRead],
    summary="Changes of customer data and grants: before, after, who, why, when (newest first)",
)
async def list_changes(
    admin: AuditReader,
    writes: WritesDep,
    page: PageDep,
    customer_id: CustomerId = None,
    user_id: UserId = None,
    department: Department | None = None,
    table: Table | None = None,
    since: Since = None,
    until: Until = None,
) -> Page[ChangeRecordRead]:
    filters: dict[str, Any] = {
        "customer_id": customer_id,
        "user_id": user_id,
        "department": department.value if department else None,
        "table": table,
        "since": since,
        "until": until,
    }
    return await _answer(
        writes,
        admin,
        "change records",
        ChangeRecordRead,
        service.list_changes,
        filters,
        page,
    )


@router.get("/reads", response_model=Page[ReadRecordRead], summary="Who read which customer's which data")
async def list_reads(
    admin: AuditReader,
    writes: WritesDep,
    page: PageDep,
    customer_id: CustomerId = None,
    user_id: UserId = None,
    department: Department | None = None,
    what: Annotated[str | None, Query(max_length=64, description="customers, demands, progress ...")] = None,
    since: Since = None,
    until: Until = None,
) -> Page[ReadRecordRead]:
    filters: dict[str, Any] = {
        "customer_id": customer_id,
        "user_id": user_id,
        "department": department.value if department else None,
        "what": what,
        "since": since,
        "until": until,
    }
    # Recorded after the query, so an admin's look at the read records does not show itself.
    return await _answer(
        writes,
        admin,
        "read records",
        ReadRecordRead,
        service.list_reads,
        filters,
        page,
    )


@router.post(
    "/records/{journal_index}/corrections",
    status_code=201,
    response_model=CorrectionRead,
    summary="Correct a login, change or read record (it stays as journaled; the correction is shown with it)",
)
async def correct_record(
    journal_index: Annotated[BigIndex, Path()], body: CorrectionCreate, admin: Admin, writes: WritesDep
) -> CorrectionRead:
    correction = await writes.run(lambda uow: service.correct(uow.session, admin, journal_index, body))
    return CorrectionRead.model_validate(correction)
