"""Routes: a staff member's notifications, read state, and the live stream (SSE)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from casebridge_shared.auth import StaffUser
from casebridge_shared.deps import SessionDep, UowDep
from casebridge_shared.openapi import LINK, response_headers
from casebridge_shared.pagination import CursorPageDep, set_page_links
from casebridge_shared.params import INT32_MAX, Int32Count, Int32Id
from casebridge_shared.problems import PROBLEM_RESPONSES, NotFound, Unprocessable
from notifier.notifications import service
from notifier.notifications.feed import NotificationFeed, stream
from notifier.notifications.models import NotificationPage, NotificationRead, ReadAllResult, UnreadCount

router = APIRouter(prefix="/notifications", tags=["notifications"], responses=PROBLEM_RESPONSES)


@router.get(
    "",
    response_model=NotificationPage,
    summary="My notifications, unread first, then newest first",
    responses=response_headers(200, LINK),
)
async def list_notifications(
    user: StaffUser,
    session: SessionDep,
    page: CursorPageDep,
    request: Request,
    response: Response,
    unread_only: bool = False,
) -> NotificationPage:
    rows, total, unread, position, next_cursor = await service.list_for(
        session, user.subject, unread_only=unread_only, page=page
    )
    set_page_links(request, response, next_cursor)
    return NotificationPage(
        items=[NotificationRead.model_validate(r) for r in rows],
        total=total,
        unread=unread,
        limit=page.limit,
        offset=page.offset,
        stream_position=position,
        next_cursor=next_cursor,
    )


@router.get("/unread-count", response_model=UnreadCount, summary="How many are unread (for a badge)")
async def count_unread(user: StaffUser, session: SessionDep) -> UnreadCount:
    unread, position = await service.counts(session, user.subject)
    return UnreadCount(unread=unread, stream_position=position)


@router.post("/read-all", response_model=ReadAllResult, summary="Mark all my notifications read")
async def mark_all_read(user: StaffUser, uow: UowDep) -> ReadAllResult:
    marked = await service.mark_all_read(uow.session, user.subject)
    await uow.commit()
    return ReadAllResult(marked_read=marked)


@router.post("/{notification_id}/read", response_model=NotificationRead, summary="Mark one notification read")
async def mark_read(notification_id: Int32Id, user: StaffUser, uow: UowDep) -> NotificationRead:
    notification = await service.mark_read(uow.session, user.subject, notification_id)
    if notification is None:
        raise NotFound(f"You have no notification {notification_id}.")
    await uow.commit()
    return NotificationRead.model_validate(notification)


@router.get(
    "/stream",
    summary="Live notifications (Server-Sent Events), resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream"}},
)
async def notification_stream(
    request: Request,
    user: StaffUser,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[
        Int32Count | None, Query(description="Resume after this event id (when the header cannot be set)")
    ] = None,
) -> StreamingResponse:
    """Each event is `event: notification`, `id:` the notification's number, `data:` the notification.

    Without `Last-Event-ID` (or `after`) the stream starts with what comes next;
    with it, the stream first sends everything after that id. A comment line is
    sent every `stream_heartbeat_seconds` to keep proxies from closing it.
    """
    resume: int | None = after
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit() or int(last_event_id) > INT32_MAX:
            raise Unprocessable(
                "Last-Event-ID must be an event id this stream sent (a number).", field="Last-Event-ID"
            )
        resume = int(last_event_id)
    container = request.app.state.container
    feed: NotificationFeed = request.app.state.notification_feed
    body = stream(feed, user.subject, resume, heartbeat_seconds=container.settings.stream_heartbeat_seconds)
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
