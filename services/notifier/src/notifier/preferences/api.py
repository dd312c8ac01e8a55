"""Routes: a staff member's own notification preferences."""

from __future__ import annotations

from fastapi import APIRouter

from casebridge_shared.auth import StaffUser
from casebridge_shared.deps import SessionDep, UowDep
from casebridge_shared.problems import PROBLEM_RESPONSES
from notifier.preferences import service
from notifier.preferences.models import PreferencesRead, PreferencesWrite

router = APIRouter(prefix="/me/preferences", tags=["preferences"], responses=PROBLEM_RESPONSES)


@router.get(
    "", response_model=PreferencesRead, summary="My channels per kind of notification, and quiet hours"
)
async def get_preferences(user: StaffUser, session: SessionDep) -> PreferencesRead:
    return service.as_read(await service.get(session, user.subject))


@router.put("", response_model=PreferencesRead, summary="Set my channels and quiet hours")
async def save_preferences(body: PreferencesWrite, user: StaffUser, uow: UowDep) -> PreferencesRead:
    """Kinds not named keep their defaults. Quiet hours (local time in `timezone`) hold back
    push and email, never escalations; in-app notifications are always kept."""
    preference = await service.put(uow.session, user.subject, body)
    await uow.commit()
    return service.as_read(preference)
