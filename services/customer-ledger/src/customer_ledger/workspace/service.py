"""The signed-in user's rights in the ledger, derived from the same rules the API enforces.

The pages offer only what this says the user may do; the API still decides every request
(this is a convenience for the screens, never a security boundary). No HTTP here.
"""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Principal, Role
from customer_ledger.customers.models import CHAIN
from customer_ledger.customers.service import WRITERS
from customer_ledger.grants.models import Grant
from customer_ledger.grants.service import department_of
from customer_ledger.workspace.models import Permissions, TableRight, WriteRights

READABLE_TABLES = ("customers", "demands", "associations", "progress", "payments")


def _may_write(department: str | None, admin: bool, table: str) -> bool:
    if admin:
        return True
    if department is None:
        return False
    allowed = WRITERS[table]
    return allowed is None or department in allowed


async def read_rights(session: AsyncSession, department: str) -> dict[str, TableRight]:
    """A department's grants added up per table as ``grants.service.table_access`` does."""
    grants = (
        await session.exec(select(Grant).where(Grant.grantee == "department", Grant.department == department))
    ).all()
    rights: dict[str, TableRight] = {}
    for table in READABLE_TABLES:
        mine = [g for g in grants if g.table == table]
        if not mine:
            continue
        fields: set[str] | None = set()
        for grant in mine:
            if grant.fields is None:
                fields = None
                break
            fields = (fields or set()) | set(grant.fields)
        rights[table] = TableRight(
            scope="all" if any(g.scope == "all" for g in mine) else "associated",
            fields=sorted(fields) if fields is not None else None,
        )
    return rights


async def permissions(session: AsyncSession, principal: Principal) -> Permissions:
    admin = principal.is_admin
    department = department_of(principal)
    if admin:
        read = {t: TableRight(scope="all", fields=None) for t in READABLE_TABLES}
    elif department is not None:
        read = await read_rights(session, department)
    else:
        read = {}
    return Permissions(
        subject=principal.subject,
        email=principal.email,
        name=principal.name,
        roles=sorted(r.value for r in principal.roles),
        department=department,
        admin=admin,
        read=read,
        write=WriteRights(
            register_customers=admin or department is not None,
            change_customers=_may_write(department, admin, "customers"),
            demands=_may_write(department, admin, "demands"),
            progress=_may_write(department, admin, "progress"),
            payments=_may_write(department, admin, "payments"),
            # The holding department only, checked per customer by the API (stage == department).
            hand_off=admin or (department is not None and department != CHAIN[-1].value),
            correct_progress=admin,
            associations=admin,
        ),
        grants=admin,
        # Auditors read the trail and the journal and nothing else (no customer records).
        audit=admin or Role.AUDITOR in principal.roles,
        hand_off_chain=[d.value for d in CHAIN],
    )


__all__ = ["permissions"]
