"""Routes: the staff's work on cases (A6, A8) and their attachments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from case_handling.cases import service, storage
from case_handling.cases.feed import CaseFeed, stream
from case_handling.cases.models import (
    AnalysisCreate,
    AssignRequest,
    Attachment,
    AttachmentRead,
    CancelRequest,
    Case,
    CaseRead,
    CaseStatus,
    CaseSummary,
    CaseUpdate,
    CommunicationCreate,
    QueueCounts,
    SolutionCreate,
    TimelineEntry,
)
from case_handling.db import idempotent_requests
from case_handling.settings import Settings
from case_handling.threads import service as threads
from casebridge_shared.auth import STAFF_ROLES, Principal, Role, StaffUser, require_roles
from casebridge_shared.db import utcnow
from casebridge_shared.deps import SessionDep, UowDep
from casebridge_shared.files import clean_file_name
from casebridge_shared.idempotency import Answer, Claim, Idempotent, create_once
from casebridge_shared.openapi import ETAG, IDEMPOTENT_REPLAYED, LINK, LOCATION, response_headers
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.pagination import CursorPage, CursorPageDep, set_page_links
from casebridge_shared.params import INT32_MAX, Int32Count
from casebridge_shared.problems import PROBLEM_RESPONSES, NotFound, Unprocessable
from casebridge_shared.storage import ObjectStore
from casebridge_shared.versioning import IfMatch, IfMatchRequired, etag

router = APIRouter(prefix="/cases", tags=["cases"], responses=PROBLEM_RESPONSES)

Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR, Role.ADMIN))]
# order-intake fetches customer-visible documents with a service token.
DocumentReader = Annotated[Principal, Depends(require_roles(*STAFF_ROLES, Role.SERVICE))]


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.container.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


async def _attachments(request: Request) -> ObjectStore:
    attachments: ObjectStore = request.app.state.container.attachments
    return attachments


AttachmentsDep = Annotated[ObjectStore, Depends(_attachments)]


def _summary_fields(case: Case, settings: Settings, now: datetime) -> dict[str, Any]:
    return {
        **case.model_dump(),
        "customer_name": case.customer.get("full_name"),
        "sla_due_at": service.sla_due_at(case, settings.sla_working_days),
        "overdue": service.is_overdue(case, settings.sla_working_days, now),
    }


async def _read(
    request: Request, session: Any, case: Case, principal: Principal, response: Response | None = None
) -> CaseRead:
    if response is not None:
        response.headers["ETag"] = etag(case.version)
    settings: Settings = request.app.state.container.settings
    entries = await service.timeline(session, case.id)
    files = await service.attachments_of(session, case.id)
    return CaseRead.model_validate(
        {
            **_summary_fields(case, settings, utcnow()),
            "timeline": [TimelineEntry.model_validate(e) for e in entries],
            "attachments": [AttachmentRead.model_validate(a) for a in files],
            "allowed_actions": service.allowed_actions(case, principal),
            "receipts": await threads.receipts_of(session, case.id),
        }
    )


@router.get(
    "", response_model=CursorPage[CaseSummary], summary="Find cases", responses=response_headers(200, LINK)
)
async def list_cases(
    _staff: StaffUser,
    session: SessionDep,
    page: CursorPageDep,
    request: Request,
    response: Response,
    settings: SettingsDep,
    status_: Annotated[CaseStatus | None, Query(alias="status")] = None,
    assignee: Annotated[
        str | None, Query(max_length=100, description="a staff member's id, `me`, or `none` for unassigned")
    ] = None,
    category: Annotated[str | None, Query(max_length=100, description="product category")] = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="free text: the customer's name or e-mail, the product, the need, or the "
            "order number (whole or its first characters)",
        ),
    ] = None,
    sort: service.SortKey = "-created_at",
    queue: Annotated[
        service.Queue | None,
        Query(
            description="one of the console's queues, all of open cases only: `open`, `unassigned`, "
            "`mine`, `team` (the product categories of my teams), `overdue` (past the service level)"
        ),
    ] = None,
) -> Any:
    assignee_id = _staff.subject if assignee == "me" else assignee
    now = utcnow()
    queue_filter = (
        service.queue_conditions(
            queue, _staff, sla_working_days=settings.sla_working_days, teams=settings.teams, now=now
        )
        if queue is not None
        else None
    )
    cases, total, next_cursor = await service.list_cases(
        session,
        status=status_,
        assignee_id=assignee_id,
        category=category,
        created_from=created_from,
        created_to=created_to,
        q=q,
        sort=sort,
        page=page,
        queue=queue_filter,
    )
    set_page_links(request, response, next_cursor)
    return CursorPage[CaseSummary](
        items=[CaseSummary.model_validate(_summary_fields(c, settings, now)) for c in cases],
        total=total,
        limit=page.limit,
        offset=page.offset,
        next_cursor=next_cursor,
    )


@router.get("/queues", response_model=QueueCounts, summary="How many open cases each queue holds")
async def queue_counts(
    staff: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    q: Annotated[
        str | None, Query(min_length=1, max_length=200, description="count within this search")
    ] = None,
) -> Any:
    counts = await service.queue_counts(
        session, staff, q=q, sla_working_days=settings.sla_working_days, teams=settings.teams, now=utcnow()
    )
    return QueueCounts(**counts)


@router.get(
    "/stream",
    summary="Live case changes (Server-Sent Events), resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream"}},
)
async def case_stream(
    request: Request,
    _staff: StaffUser,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[
        Int32Count | None, Query(description="Resume after this event id (when the header cannot be set)")
    ] = None,
) -> StreamingResponse:
    """Each event is `event: case`, `id:` the change's number, `data:` which case changed, how
    (`kind`: opened, assigned, status_changed, ...) and its status now. Staff only.

    A comment line is sent every `stream_heartbeat_seconds` to keep proxies from closing it.
    """
    resume = after
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit() or int(last_event_id) > INT32_MAX:
            raise Unprocessable("Last-Event-ID must be a number from this stream", field="Last-Event-ID")
        resume = int(last_event_id)
    feed: CaseFeed = request.app.state.case_feed
    return StreamingResponse(
        stream(feed, resume, heartbeat_seconds=settings.stream_heartbeat_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{case_id}",
    response_model=CaseRead,
    summary="A case with its timeline",
    responses=response_headers(200, ETAG),
)
async def read_case(
    staff: StaffUser, case_id: str, session: SessionDep, request: Request, response: Response
) -> Any:
    case = await service.get_case(session, case_id)
    return await _read(request, session, case, staff, response)


@router.patch(
    "/{case_id}",
    response_model=CaseRead,
    summary="Correct or complete the service information",
    responses=response_headers(200, ETAG),
)
async def update_case(
    principal: StaffUser,
    case_id: str,
    request: Request,
    body: CaseUpdate,
    uow: UowDep,
    response: Response,
    version: IfMatchRequired,
) -> Any:
    case = await service.update_case(uow, principal, case_id, body, version)
    await uow.commit()
    return await _read(request, uow.session, case, principal, response)


async def _done(request: Request, uow: Any, case: Case, principal: Principal, response: Response) -> CaseRead:
    await uow.commit()
    return await _read(request, uow.session, case, principal, response)


async def _recorded_once(
    request: Request,
    uow: UnitOfWork,
    principal: Principal,
    claim: Claim,
    record: Callable[[], Awaitable[Case]],
) -> Any:
    """``record`` (adds an entry to the case) once per Idempotency-Key; a retry answers the case as it was."""

    async def create() -> Answer:
        case = await record()
        read = await _done(request, uow, case, principal, Response())
        return Answer.of(200, read, ETag=etag(read.version))

    return (await create_once(uow, claim, create)).response()


@router.post(
    "/{case_id}/claim",
    response_model=CaseRead,
    summary="Take the case",
    responses=response_headers(200, ETAG),
)
async def claim_case(
    principal: StaffUser,
    case_id: str,
    request: Request,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    case = await service.claim(uow, principal, case_id, version)
    return await _done(request, uow, case, principal, response)


@router.post(
    "/{case_id}/assign",
    response_model=CaseRead,
    summary="Assign the case (supervisor)",
    responses=response_headers(200, ETAG),
)
async def assign_case(
    principal: Supervisor,
    case_id: str,
    request: Request,
    body: AssignRequest,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    case = await service.assign(
        uow,
        principal,
        case_id,
        body.assignee_id,
        body.assignee_name,
        version,
    )
    return await _done(request, uow, case, principal, response)


@router.post(
    "/{case_id}/start",
    response_model=CaseRead,
    summary="Start working on the case",
    responses=response_headers(200, ETAG),
)
async def start_case(
    principal: StaffUser,
    case_id: str,
    request: Request,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    case = await service.start(uow, principal, case_id, version)
    return await _done(request, uow, case, principal, response)


@router.post(
    "/{case_id}/analysis",
    response_model=CaseRead,
    summary="Record the analysis of the legal need",
    responses=response_headers(200, ETAG),
)
async def record_analysis(
    principal: StaffUser,
    case_id: str,
    request: Request,
    body: AnalysisCreate,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    case = await service.record_analysis(uow, principal, case_id, body, version)
    return await _done(request, uow, case, principal, response)


@router.post(
    "/{case_id}/communications",
    response_model=CaseRead,
    summary="Record a contact with the customer",
    responses=response_headers(200, ETAG, IDEMPOTENT_REPLAYED),
)
async def record_communication(
    principal: StaffUser,
    case_id: str,
    request: Request,
    body: CommunicationCreate,
    uow: UowDep,
    version: IfMatch,
    idempotent: Idempotent,
) -> Any:
    claim = idempotent.claim(idempotent_requests, principal.subject, body)
    return await _recorded_once(
        request,
        uow,
        principal,
        claim,
        lambda: service.record_communication(uow, principal, case_id, body, version),
    )


@router.post(
    "/{case_id}/solution",
    response_model=CaseRead,
    summary="Propose the solution to the customer",
    responses=response_headers(200, ETAG, IDEMPOTENT_REPLAYED),
)
async def propose_solution(
    principal: StaffUser,
    case_id: str,
    request: Request,
    body: SolutionCreate,
    uow: UowDep,
    version: IfMatch,
    idempotent: Idempotent,
) -> Any:
    claim = idempotent.claim(idempotent_requests, principal.subject, body)
    return await _recorded_once(
        request,
        uow,
        principal,
        claim,
        lambda: service.propose_solution(uow, principal, case_id, body, version),
    )


@router.post(
    "/{case_id}/close",
    response_model=CaseRead,
    summary="Close the case: the work is done",
    responses=response_headers(200, ETAG),
)
async def close_case(
    principal: StaffUser,
    case_id: str,
    request: Request,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    case = await service.close(uow, principal, case_id, version)
    return await _done(request, uow, case, principal, response)


@router.post(
    "/{case_id}/cancel",
    response_model=CaseRead,
    summary="Cancel the case (supervisor)",
    responses=response_headers(200, ETAG),
)
async def cancel_case(
    principal: Supervisor,
    case_id: str,
    request: Request,
    body: CancelRequest,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    case = await service.cancel(uow, principal, case_id, body.reason, version)
    return await _done(request, uow, case, principal, response)


# --- attachments --------------------------------------------------------------------


@router.post(
    "/{case_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    response_model=AttachmentRead,
    summary="Upload a document to the case",
    responses=response_headers(201, LOCATION, IDEMPOTENT_REPLAYED),
)
async def upload_attachment(
    principal: StaffUser,
    case_id: str,
    uow: UowDep,
    settings: SettingsDep,
    attachments: AttachmentsDep,
    idempotent: Idempotent,
    file: Annotated[UploadFile, File(description="the document")],
    visibility: Annotated[Literal["customer", "internal"], Form()] = "internal",
) -> Any:
    case = await service.get_case(uow.session, case_id, for_update=True)
    service.require_workable(case, principal)
    stored = await storage.store(
        file, attachments, max_bytes=settings.attachment_max_bytes, allowed=settings.attachment_allowed_types
    )

    async def create() -> Answer:
        attachment = Attachment(
            case_id=case.id,
            file_name=stored.file_name,
            media_type=stored.media_type,
            size=stored.size,
            sha256=stored.sha256,
            visibility=visibility,
            storage_key=stored.storage_key,
            uploaded_by=principal.subject,
        )
        uow.session.add(attachment)
        service.attachment_added(uow, case, attachment, principal)
        await uow.commit()
        location = f"/cases/{case.id}/attachments/{attachment.id}"
        return Answer.of(201, AttachmentRead.model_validate(attachment), Location=location)

    # The file must be read to be fingerprinted, so it is stored first; the key row commits
    # with the attachment row, and a replay drops this request's copy below.
    claim = idempotent.claim_upload(
        idempotent_requests, principal.subject, [stored], {"visibility": visibility}
    )
    try:
        answer = await create_once(uow, claim, create)
    except BaseException:
        await attachments.delete(stored.storage_key)  # no file without its row
        raise
    if answer.replayed:
        await attachments.delete(stored.storage_key)  # the first request's file is the one kept
    return answer.response()


@router.get("/{case_id}/attachments", response_model=list[AttachmentRead], summary="The case's documents")
async def list_attachments(_staff: StaffUser, case_id: str, session: SessionDep) -> Any:
    case = await service.get_case(session, case_id)
    return [AttachmentRead.model_validate(a) for a in await service.attachments_of(session, case.id)]


@router.get(
    "/{case_id}/attachments/{attachment_id}/content",
    response_class=StreamingResponse,
    summary="Download a document (order-intake fetches customer-visible ones with its service token)",
    responses=response_headers(200, ETAG),
)
async def download_attachment(
    principal: DocumentReader,
    case_id: str,
    attachment_id: str,
    session: SessionDep,
    attachments: AttachmentsDep,
) -> Any:
    attachment = await session.get(Attachment, attachment_id)
    machine = not principal.has_any(STAFF_ROLES)
    if (
        attachment is None
        or attachment.case_id != case_id
        # An internal document does not exist as far as a machine caller knows.
        or (machine and attachment.visibility != "customer")
    ):
        raise NotFound(f"no attachment {attachment_id} on case {case_id}")
    # Always an attachment (never rendered in our origin); nosniff and a sandboxing
    # policy come from the shared security headers. Names stored before issue 25 may still
    # carry control characters: cleaned here as well.
    return await storage.download_response(
        attachments,
        attachment.storage_key,
        size=attachment.size,
        sha256=attachment.sha256,
        media_type=attachment.media_type,
        filename=clean_file_name(attachment.file_name) or f"attachment-{attachment.id}",
        headers={"ETag": f'"{attachment.sha256}"', "X-Content-SHA256": attachment.sha256},
        what=f"attachment {attachment.id}",
    )
