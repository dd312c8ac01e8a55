"""Who may read what (SPEC B2, B3, B6). Deny unless a rule allows. No HTTP here.

Admin reads everything. A department user reads a table only under an admin
grant, and then only the customers associated with the department (scope
``associated``) or all of them (``all``), restricted to the grant's fields if it
names any. A customer reads their own project progress once a grant names them
or every customer. Anyone else (staff, supervisors, services) is refused.
Grants are read from the database on every request, so a revoke is effective
on the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Principal, Role
from casebridge_shared.db import new_id, utcnow
from casebridge_shared.problems import Conflict, Forbidden, NotFound
from customer_ledger.customers.models import Association, Customer
from customer_ledger.grants.models import GRANTABLE_FIELDS, KEY_FIELDS, Grant, GrantCreate
from customer_ledger.records import Actor, record_change


@dataclass(frozen=True)
class TableAccess:
    """What a reader may see of one table: every customer or only associated ones, which fields."""

    everyone: bool
    department: str | None
    fields: frozenset[str] | None  # None: every field

    def shape(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.fields is None:
            return row
        return {k: v for k, v in row.items() if k in self.fields or k in KEY_FIELDS}

    def shape_all(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.shape(r) for r in rows]


ADMIN_ACCESS = TableAccess(everyone=True, department=None, fields=None)


def department_of(principal: Principal) -> str | None:
    if Role.DEPARTMENT in principal.roles and principal.department is not None:
        return principal.department.value
    return None


async def table_access(session: AsyncSession, principal: Principal, table: str) -> TableAccess:
    """The reader's access to ``table``, or 403 when no rule allows it."""
    if principal.is_admin:
        return ADMIN_ACCESS
    department = department_of(principal)
    if department is None:
        raise Forbidden("only admin and department users read customer records")
    grants = (
        await session.exec(
            select(Grant).where(
                Grant.grantee == "department", Grant.department == department, Grant.table == table
            )
        )
    ).all()
    if not grants:
        raise Forbidden(f"the {department} department has no read grant on {table}")
    fields: frozenset[str] | None = frozenset()
    for grant in grants:
        if grant.fields is None:
            fields = None
            break
        fields = (fields or frozenset()) | frozenset(grant.fields)
    return TableAccess(everyone=any(g.scope == "all" for g in grants), department=department, fields=fields)


async def is_associated(session: AsyncSession, customer_id: str, department: str) -> bool:
    found = await session.exec(
        select(Association.id).where(
            Association.customer_id == customer_id, Association.department == department
        )
    )
    return found.first() is not None


# The customer and whether a department is associated with them, in one statement built
# once: every department request asks both first, and two look-ups (each statement
# built, keyed for the compiled cache, and sent) were a sizeable part of a progress
# update's CPU (see ADR-0018).
_CUSTOMER_FOR_DEPARTMENT = (
    select(Customer, Association.id)
    .outerjoin(
        Association,
        and_(
            col(Association.customer_id) == col(Customer.id),
            col(Association.department) == bindparam("department"),
        ),
    )
    .where(col(Customer.id) == bindparam("customer_id"))
    .limit(1)
)


async def customer_for_department(
    session: AsyncSession, customer_id: str, department: str
) -> tuple[Customer | None, bool]:
    """The customer (None: no such customer), and whether ``department`` is associated with them."""
    row = (
        await session.execute(
            _CUSTOMER_FOR_DEPARTMENT, {"customer_id": customer_id, "department": department}
        )
    ).first()
    if row is None:
        return None, False
    return row[0], row[1] is not None


async def customer_in_sight(session: AsyncSession, access: TableAccess, customer_id: str) -> Customer:
    """The customer, if this access may see them; otherwise 404 exactly as if they did not exist."""
    if access.everyone or access.department is None:
        customer = await session.get(Customer, customer_id)
    else:
        customer, associated = await customer_for_department(session, customer_id, access.department)
        if not associated:
            customer = None
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer


async def customer_may_see_progress(session: AsyncSession, customer_id: str) -> bool:
    found = await session.exec(
        select(Grant.id).where(
            Grant.grantee == "customer",
            Grant.table == "progress",
            or_(col(Grant.customer_id).is_(None), col(Grant.customer_id) == customer_id),
        )
    )
    return found.first() is not None


async def entry_in_sight(session: AsyncSession, reader: Principal, body: dict[str, Any]) -> str | None:
    """Whether ``reader`` may read this journal entry; returns the customer it is about.

    An entry is served exactly as hashed (so its leaf hash can be checked), never
    cut down to granted fields: a department reads the change entries of a table it
    holds a full grant on, for customers in its sight; a customer the changes of
    their own progress once granted; access records (logins, reads) are admin's and the
    auditor's, who reads every entry (the trail it checks shows the same before and after).
    """
    customer_id = body.get("customer_id") if body.get("type") == "change" else None
    if reader.is_admin or Role.AUDITOR in reader.roles:
        return customer_id if isinstance(customer_id, str) else None
    table = body.get("table")
    if body.get("type") != "change" or table not in GRANTABLE_FIELDS or not isinstance(customer_id, str):
        raise Forbidden("this entry is an access record or a grant; only admin reads it")
    if Role.CUSTOMER in reader.roles and department_of(reader) is None:
        if table == "progress" and customer_id == reader.subject:
            if await customer_may_see_progress(session, customer_id):
                return customer_id
            raise Forbidden("project progress is not yet open to you; the firm grants it")
        raise Forbidden("customers read only the entries of their own project progress")
    access = await table_access(session, reader, table)
    if access.fields is not None:
        raise Forbidden(f"your grant on {table} shows some fields only; the entry holds them all")
    await customer_in_sight(session, access, customer_id)
    return customer_id


# --- admin: granting and revoking ------------------------------------------


async def grant(session: AsyncSession, admin: Principal, body: GrantCreate) -> Grant:
    grantee = "department" if body.department is not None else "customer"
    fields = sorted(set(body.fields)) if body.fields is not None else None
    new = Grant(
        id=new_id(),
        grantee=grantee,
        department=body.department.value if body.department else None,
        customer_id=body.customer_id,
        table=body.table,
        scope=body.scope if grantee == "department" else "own",
        fields=fields if grantee == "department" else None,
        granted_by=admin.subject,
        granted_at=utcnow(),
    )
    for existing in (
        await session.exec(
            select(Grant).where(
                Grant.grantee == new.grantee,
                Grant.table == new.table,
                Grant.scope == new.scope,
                Grant.department == new.department if new.department else col(Grant.department).is_(None),
                Grant.customer_id == new.customer_id if new.customer_id else col(Grant.customer_id).is_(None),
            )
        )
    ).all():
        if existing.fields == new.fields:
            raise Conflict(f"the same grant exists already: {existing.id}", field="body")
    await record_change(
        session,
        Actor.of(admin),
        table="grants",
        operation="insert",
        before=None,
        after=new,
        reason=body.reason,
    )
    return new


async def revoke(session: AsyncSession, admin: Principal, grant_id: str, reason: str | None) -> None:
    existing = await session.get(Grant, grant_id)
    if existing is None:
        raise NotFound(f"no grant {grant_id}")
    await record_change(
        session,
        Actor.of(admin),
        table="grants",
        operation="delete",
        before=existing,
        after=None,
        reason=reason,
    )


async def list_grants(session: AsyncSession, *, department: str | None, table: str | None) -> list[Grant]:
    query = select(Grant)
    if department:
        query = query.where(Grant.department == department)
    if table:
        query = query.where(Grant.table == table)
    return list((await session.exec(query.order_by(col(Grant.granted_at), col(Grant.id)))).all())
