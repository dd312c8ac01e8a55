"""Routes: a staff member's own notification preferences."""

from __future__ import annotations

from fastapi import APIRouter, Response

from casebridge_shared.auth import StaffUser
from casebridge_shared.deps import SessionDep, UowDep
from casebridge_shared.openapi import ETAG, response_headers
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.versioning import IfMatch, etag
from notifier.preferences import service
from notifier.preferences.models import PreferencesRead, PreferencesWrite

router = APIRouter(prefix="/me/preferences", tags=["preferences"], responses=PROBLEM_RESPONSES)


@router.get(
    "",
    response_model=PreferencesRead,
    summary="My channels per kind of notification, and quiet hours",
    responses=response_headers(200, ETAG),
)
async def get_preferences(user: StaffUser, session: SessionDep, response: Response) -> PreferencesRead:
    read = service.as_read(await service.get(session, user.subject))
    response.headers[ETAG] = etag(read.version)
    return read


@router.put(
    "",
    response_model=PreferencesRead,
    summary="Set my channels and quiet hours",
    responses=response_headers(200, ETAG),
)
async def save_preferences(
    body: PreferencesWrite, user: StaffUser, uow: UowDep, response: Response, version: IfMatch
) -> PreferencesRead:
    """Kinds not named keep their defaults. Quiet hours (local time in `timezone`) hold back
    push and email, never escalations; in-app notifications are always kept."""
    preference = await service.put(uow.session, user.subject, body, version)
    await uow.commit()
    read = service.as_read(preference)
    response.headers[ETAG] = etag(read.version)
    return read
