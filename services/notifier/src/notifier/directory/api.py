"""Routes: the staff the notifier knows (admins), so a team can be chosen by name, not by id."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlmodel import col, select

from casebridge_shared.auth import STAFF_ROLES, AdminUser
from casebridge_shared.deps import SessionDep
from casebridge_shared.problems import PROBLEM_RESPONSES
from notifier.directory.models import Person

router = APIRouter(tags=["routing"], responses=PROBLEM_RESPONSES)


class StaffMember(BaseModel):
    user_id: str
    email: str
    full_name: str
    roles: list[str]
    active: bool


@router.get("/staff", response_model=list[StaffMember], summary="Staff this service can alert (admin)")
async def list_staff(_admin: AdminUser, session: SessionDep) -> list[StaffMember]:
    """Everyone with a staff, supervisor or admin role in the notifier's copy of the directory
    (kept from order-intake's identity events, so it answers while order-intake is down),
    disabled ones included and marked: a team may still name them."""
    people = (await session.exec(select(Person).order_by(col(Person.full_name), col(Person.email)))).all()
    staff = {r.value for r in STAFF_ROLES}
    return [
        StaffMember(
            user_id=p.user_id,
            email=p.email,
            full_name=p.full_name,
            roles=p.roles.split(),
            active=p.active,
        )
        for p in people
        if staff & set(p.roles.split())
    ]
