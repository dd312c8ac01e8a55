"""Routes: the admin's audit queries over access information (SPEC B5, B6, B7).

Each query is answered only after the read itself is in the journal: an
admin's reads are on record like everyone's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from casebridge_shared.auth import Department, Principal, Role, require_roles
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.idempotency import Answer, Idempotent, create_once_with_others
from casebridge_shared.openapi import IDEMPOTENT_REPLAYED, LINK, response_headers
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.pagination import CursorPage, CursorPageDep, PageParams, set_page_links
from casebridge_shared.params import BigIndex
from casebridge_shared.problems import PROBLEM_RESPONSES
from customer_ledger.access import csv_export, service
from customer_ledger.access.models import (
    ChangeRecordRead,
    CorrectionCreate,
    CorrectionRead,
    LoginRecordRead,
    ReadRecordRead,
)
from customer_ledger.db import idempotent_requests
from customer_ledger.deps import WritesDep
from customer_ledger.records import Actor, record_read

R = TypeVar("R", LoginRecordRead, ChangeRecordRead, ReadRecordRead)

router = APIRouter(prefix="/audit", tags=["audit"], responses=PROBLEM_RESPONSES)

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
# Reading the trail: admins, and auditors (people or machine clients such as an accounting export).
AuditReader = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.AUDITOR))]
# PostgreSQL text holds no NUL character: one in a filter is a 422 naming it, not a driver error (500).
NO_NUL = r"^[^\x00]*$"
UserId = Annotated[
    str | None, Query(max_length=64, pattern=NO_NUL, description="Who logged in, changed or read")
]
CustomerId = Annotated[str | None, Query(max_length=36, pattern=NO_NUL)]
Since = Annotated[datetime | None, Query(description="From this time (inclusive)")]
Until = Annotated[datetime | None, Query(description="Before this time")]
EXPORT_MAX_ROWS = 10_000
Table = Literal["customers", "demands", "associations", "progress", "payments", "grants"]


async def _answer(
    writes: GroupCommit,
    admin: Principal,
    what: str,
    model: type[R],
    list_records: Callable[..., Awaitable[tuple[Sequence[Any], int, str | None]]],
    filters: dict[str, Any],
    page: PageParams,
) -> CursorPage[R]:
    """The page of ``list_records(session, **filters)``, with each record's corrections,
    once the admin's query is itself journaled."""

    async def query_and_record(uow: UnitOfWork) -> CursorPage[R]:
        session = uow.session
        rows, total, next_cursor = await list_records(session, **filters, page=page)
        corrections = await service.corrections_of(session, [r.journal_index for r in rows])
        items = []
        for row in rows:
            item = model.model_validate(row)
            item.corrections = [
                CorrectionRead.model_validate(c) for c in corrections.get(row.journal_index, [])
            ]
            items.append(item)
        asked = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in filters.items()}
        # A cursor's page is on record by the key it continued after (the cursor text is opaque).
        where = {"offset": page.offset} if page.after is None else {"after": page.after}
        await record_read(
            session,
            Actor.of(admin),
            what,
            customers=[c for r in rows if (c := getattr(r, "customer_id", None))],
            query={**asked, "limit": page.limit, **where},
        )
        return CursorPage[R](
            items=items, total=total, limit=page.limit, offset=page.offset, next_cursor=next_cursor
        )

    return await writes.run(query_and_record)


async def login_filters(
    user_id: UserId = None,
    email: Annotated[str | None, Query(max_length=320, pattern=NO_NUL)] = None,
    department: Department | None = None,
    outcome: Literal["success", "failure"] | None = None,
    since: Since = None,
    until: Until = None,
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "email": email,
        "department": department.value if department else None,
        "outcome": outcome,
        "since": since,
        "until": until,
    }


async def change_filters(
    customer_id: CustomerId = None,
    user_id: UserId = None,
    department: Department | None = None,
    table: Table | None = None,
    since: Since = None,
    until: Until = None,
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "user_id": user_id,
        "department": department.value if department else None,
        "table": table,
        "since": since,
        "until": until,
    }


async def read_filters(
    customer_id: CustomerId = None,
    user_id: UserId = None,
    department: Department | None = None,
    what: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="customers, demands, progress ...")
    ] = None,
    since: Since = None,
    until: Until = None,
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "user_id": user_id,
        "department": department.value if department else None,
        "what": what,
        "since": since,
        "until": until,
    }


LoginFilters = Annotated[dict[str, Any], Depends(login_filters)]
ChangeFilters = Annotated[dict[str, Any], Depends(change_filters)]
ReadFilters = Annotated[dict[str, Any], Depends(read_filters)]


@router.get(
    "/logins",
    response_model=CursorPage[LoginRecordRead],
    summary="Logins, successful and failed (newest first)",
    responses=response_headers(200, LINK),
)
async def list_logins(
    admin: AuditReader,
    writes: WritesDep,
    page: CursorPageDep,
    filters: LoginFilters,
    request: Request,
    response: Response,
) -> CursorPage[LoginRecordRead]:
    answer = await _answer(writes, admin, "logins", LoginRecordRead, service.list_logins, filters, page)
    set_page_links(request, response, answer.next_cursor)
    return answer


@router.get(
    "/changes",
    response_model=CursorPage[ChangeRecordRead],
    summary="Changes of customer data and grants: before, after, who, why, when (newest first)",
    responses=response_headers(200, LINK),
)
async def list_changes(
    admin: AuditReader,
    writes: WritesDep,
    page: CursorPageDep,
    filters: ChangeFilters,
    request: Request,
    response: Response,
) -> CursorPage[ChangeRecordRead]:
    answer = await _answer(
        writes, admin, "change records", ChangeRecordRead, service.list_changes, filters, page
    )
    set_page_links(request, response, answer.next_cursor)
    return answer


@router.get(
    "/reads",
    response_model=CursorPage[ReadRecordRead],
    summary="Who read which customer's which data (newest first)",
    responses=response_headers(200, LINK),
)
async def list_reads(
    admin: AuditReader,
    writes: WritesDep,
    page: CursorPageDep,
    filters: ReadFilters,
    request: Request,
    response: Response,
) -> CursorPage[ReadRecordRead]:
    # Recorded after the query, so an admin's look at the read records does not show itself.
    answer = await _answer(writes, admin, "read records", ReadRecordRead, service.list_reads, filters, page)
    set_page_links(request, response, answer.next_cursor)
    return answer


# --- CSV exports (issue 26: the auditor's trail in a spreadsheet) ---------------------------------

ExportLimit = Annotated[
    int, Query(ge=1, le=EXPORT_MAX_ROWS, description="At most this many records (newest matching first)")
]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "CSV (RFC 4180), one record a row"}
}


async def _export(
    writes: GroupCommit,
    admin: Principal,
    what: str,
    model: type[R],
    list_records: Callable[..., Awaitable[tuple[Sequence[Any], int, str | None]]],
    filters: dict[str, Any],
    limit: int,
) -> Response:
    """Up to ``limit`` records matching ``filters`` as CSV, journaled as a read like every other
    (``what`` names the export, so the trail shows who took a copy of what)."""
    page = await _answer(writes, admin, what, model, list_records, filters, PageParams(limit=limit, offset=0))
    rows = [item.model_dump(mode="json") for item in page.items]
    return Response(
        content=csv_export.to_csv(list(model.model_fields), rows),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{what.replace(" ", "-")}.csv"',
            "X-Total-Count": str(page.total),
        },
    )


@router.get("/logins.csv", response_class=Response, responses=CSV_RESPONSE, summary="Logins as CSV")
async def export_logins(
    admin: AuditReader, writes: WritesDep, filters: LoginFilters, limit: ExportLimit = 10_000
) -> Response:
    return await _export(writes, admin, "logins export", LoginRecordRead, service.list_logins, filters, limit)


@router.get("/changes.csv", response_class=Response, responses=CSV_RESPONSE, summary="Change records as CSV")
async def export_changes(
    admin: AuditReader, writes: WritesDep, filters: ChangeFilters, limit: ExportLimit = 10_000
) -> Response:
    return await _export(
        writes, admin, "change records export", ChangeRecordRead, service.list_changes, filters, limit
    )


@router.get("/reads.csv", response_class=Response, responses=CSV_RESPONSE, summary="Read records as CSV")
async def export_reads(
    admin: AuditReader, writes: WritesDep, filters: ReadFilters, limit: ExportLimit = 10_000
) -> Response:
    return await _export(
        writes, admin, "read records export", ReadRecordRead, service.list_reads, filters, limit
    )


@router.post(
    "/records/{journal_index}/corrections",
    status_code=201,
    response_model=CorrectionRead,
    summary="Correct a login, change or read record (it stays as journaled; the correction is shown with it)",
    responses=response_headers(201, IDEMPOTENT_REPLAYED),
)
async def correct_record(
    journal_index: Annotated[BigIndex, Path()],
    body: CorrectionCreate,
    admin: Admin,
    writes: WritesDep,
    idempotent: Idempotent,
) -> Any:
    async def create(uow: UnitOfWork) -> Answer:
        correction = await service.correct(uow.session, admin, journal_index, body)
        return Answer.of(201, CorrectionRead.model_validate(correction))

    claim = idempotent.claim(idempotent_requests, admin.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()
