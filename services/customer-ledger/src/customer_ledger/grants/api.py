"""Routes: admin grants and revokes read rights (B3, B6); effective on the next request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from casebridge_shared.auth import Department, Principal, Role, require_roles
from casebridge_shared.idempotency import Answer, Idempotent, create_once_with_others
from casebridge_shared.openapi import IDEMPOTENT_REPLAYED, response_headers
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import PROBLEM_RESPONSES
from customer_ledger.db import idempotent_requests
from customer_ledger.deps import WritesDep
from customer_ledger.grants import service
from customer_ledger.grants.models import GrantCreate, GrantRead, TableName
from customer_ledger.records import Actor, record_read

router = APIRouter(prefix="/grants", tags=["grants"], responses=PROBLEM_RESPONSES)

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


@router.post(
    "",
    status_code=201,
    response_model=GrantRead,
    summary="Grant a read right",
    responses=response_headers(201, IDEMPOTENT_REPLAYED),
)
async def create_grant(body: GrantCreate, admin: Admin, writes: WritesDep, idempotent: Idempotent) -> Any:
    async def create(uow: UnitOfWork) -> Answer:
        return Answer.of(201, GrantRead.model_validate(await service.grant(uow.session, admin, body)))

    claim = idempotent.claim(idempotent_requests, admin.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()


@router.get("", response_model=list[GrantRead], summary="Grants in force")
async def list_grants(
    admin: Admin,
    writes: WritesDep,
    department: Department | None = None,
    table: TableName | None = None,
) -> list[GrantRead]:
    wanted = department.value if department else None

    async def look_up_and_record(uow: UnitOfWork) -> list[GrantRead]:
        rows = await service.list_grants(uow.session, department=wanted, table=table)
        await record_read(
            uow.session, Actor.of(admin), "grants", query={"department": wanted, "table": table}
        )
        return [GrantRead.model_validate(g) for g in rows]

    return await writes.run(look_up_and_record)


@router.delete("/{grant_id}", status_code=204, summary="Revoke a grant")
async def revoke_grant(
    grant_id: Annotated[str, Path(max_length=36)],
    admin: Admin,
    writes: WritesDep,
    reason: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
) -> None:
    await writes.run(lambda uow: service.revoke(uow.session, admin, grant_id, reason))
