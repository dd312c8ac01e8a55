"""Routes: admin grants and revokes read rights (B3, B6); effective on the next request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from casebridge_shared.auth import Department, Principal, Role, require_roles
from casebridge_shared.problems import PROBLEM_RESPONSES
from customer_ledger.deps import UowDep
from customer_ledger.grants import service
from customer_ledger.grants.models import GrantCreate, GrantRead, TableName
from customer_ledger.records import Actor, record_read

router = APIRouter(prefix="/grants", tags=["grants"], responses=PROBLEM_RESPONSES)

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


@router.post("", status_code=201, response_model=GrantRead, summary="Grant a read right")
async def create_grant(body: GrantCreate, admin: Admin, uow: UowDep) -> GrantRead:
    grant = await service.grant(uow.session, admin, body)
    await uow.commit()
    return GrantRead.model_validate(grant)


@router.get("", response_model=list[GrantRead], summary="Grants in force")
async def list_grants(
    admin: Admin,
    uow: UowDep,
    department: Department | None = None,
    table: TableName | None = None,
) -> list[GrantRead]:
    rows = await service.list_grants(
        uow.session, department=department.value if department else None, table=table
    )
    await record_read(
        uow.session,
        Actor.of(admin),
        "grants",
        query={"department": department.value if department else None, "table": table},
    )
    await uow.commit()
    return [GrantRead.model_validate(g) for g in rows]


@router.delete("/{grant_id}", status_code=204, summary="Revoke a grant")
async def revoke_grant(
    grant_id: Annotated[str, Path(max_length=36)],
    admin: Admin,
    uow: UowDep,
    reason: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
) -> None:
    await service.revoke(uow.session, admin, grant_id, reason)
    await uow.commit()
