"""Routes: the admin's audit queries over access information (SPEC B5, B6).

The query is answered only after the read itself is in the journal: an
admin's reads are on record like everyone's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from casebridge_shared.auth import Principal, Role, require_roles
from casebridge_shared.pagination import Page, PageDep
from casebridge_shared.problems import PROBLEM_RESPONSES
from customer_ledger.access import service
from customer_ledger.access.models import LoginRecordRead
from customer_ledger.deps import UowDep

router = APIRouter(prefix="/audit", tags=["audit"], responses=PROBLEM_RESPONSES)

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


@router.get("/logins", response_model=Page[LoginRecordRead], summary="Logins, successful and failed")
async def list_logins(
    admin: Admin,
    uow: UowDep,
    page: PageDep,
    user_id: Annotated[str | None, Query(max_length=36)] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    outcome: Literal["success", "failure"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[LoginRecordRead]:
    rows, total = await service.list_logins(
        uow.session,
        user_id=user_id,
        email=email,
        outcome=outcome,
        since=since,
        until=until,
        limit=page.limit,
        offset=page.offset,
    )
    query = {
        "user_id": user_id,
        "email": email,
        "outcome": outcome,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "limit": page.limit,
        "offset": page.offset,
    }
    await service.record_read(uow.session, admin, "logins", query)
    await uow.commit()
    items = [LoginRecordRead.model_validate(r) for r in rows]
    return Page[LoginRecordRead](items=items, total=total, limit=page.limit, offset=page.offset)
