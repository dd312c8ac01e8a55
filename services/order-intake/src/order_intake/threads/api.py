"""Routes: the order's thread (messages, the customer's files, read receipts), issue 26."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from casebridge_shared import uploads
from casebridge_shared.auth import STAFF_ROLES, Principal, Role, require_roles
from casebridge_shared.files import clean_file_name
from casebridge_shared.idempotency import Answer, IdempotencyKey, Idempotent, create_once, mark_replayed
from casebridge_shared.openapi import ETAG, IDEMPOTENT_REPLAYED, LOCATION, response_headers
from casebridge_shared.problems import PROBLEM_RESPONSES, Unprocessable
from casebridge_shared.storage import download_response
from order_intake.db import idempotent_requests
from order_intake.deps import ContainerDep, SessionDep, UowDep
from order_intake.threads import service
from order_intake.threads.models import (
    FileList,
    FileRead,
    MessageCreate,
    MessageList,
    MessageRead,
    ReceiptCreate,
)

router = APIRouter(prefix="/orders", tags=["order thread"], responses=PROBLEM_RESPONSES)

ThreadReader = Annotated[Principal, Depends(require_roles(Role.CUSTOMER, *STAFF_ROLES))]
# case-handling fetches the customer's files with a service token.
FileReader = Annotated[Principal, Depends(require_roles(Role.CUSTOMER, *STAFF_ROLES, Role.SERVICE))]
Customer = Annotated[Principal, Depends(require_roles(Role.CUSTOMER))]


@router.get(
    "/{order_id}/messages",
    response_model=MessageList,
    summary="The order's thread, oldest first: messages, staff replies, customer-visible communications",
)
async def list_messages(order_id: str, principal: ThreadReader, session: SessionDep) -> Any:
    messages = await service.messages_of(session, principal, order_id)
    return MessageList(items=[MessageRead.model_validate(m) for m in messages])


@router.post(
    "/{order_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageRead,
    summary="Write to the team handling the order (while it is open)",
    responses=response_headers(201, LOCATION, IDEMPOTENT_REPLAYED),
)
async def post_message(
    order_id: str,
    body: MessageCreate,
    principal: Customer,
    uow: UowDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    message, replayed = await service.post_message(uow, principal, order_id, body.body, idempotency_key)
    response.headers["Location"] = f"/orders/{order_id}/messages"
    mark_replayed(response, replayed)
    return MessageRead.model_validate(message)


@router.post(
    "/{order_id}/files",
    status_code=status.HTTP_201_CREATED,
    response_model=FileList,
    summary="Attach files to the order (several at once; while it is open)",
    responses=response_headers(201, IDEMPOTENT_REPLAYED),
)
async def attach_files(
    order_id: str,
    principal: Customer,
    uow: UowDep,
    container: ContainerDep,
    idempotent: Idempotent,
    files: Annotated[list[UploadFile], File(description="one or more files")],
) -> Any:
    settings = container.settings
    if len(files) > settings.customer_files_per_upload:
        raise Unprocessable(f"at most {settings.customer_files_per_upload} files at once", field="body.files")
    order = await service.check_can_attach(uow, principal, order_id)
    objects = container.customer_files
    stored: list[uploads.StoredFile] = []
    try:
        for upload in files:
            stored.append(
                await uploads.store(
                    upload,
                    objects,
                    max_bytes=settings.customer_file_max_bytes,
                    allowed=settings.customer_file_allowed_types,
                    field="body.files",
                )
            )

        async def create() -> Answer:
            added = service.attach_files(uow, principal, order, stored)
            await uow.commit()
            return Answer.of(201, FileList(items=[FileRead.model_validate(f) for f in added]))

        # The files must be read to be fingerprinted, so they are stored first; the key row
        # commits with the file rows, and a replay drops this request's copies below.
        claim = idempotent.claim_upload(idempotent_requests, principal.subject, stored)
        answer = await create_once(uow, claim, create)
    except BaseException:
        for item in stored:  # no file without its row: all of them, or none
            await objects.delete(item.storage_key)
        raise
    if answer.replayed:
        for item in stored:  # the first request's files are the ones kept
            await objects.delete(item.storage_key)
    return answer.response()


@router.get("/{order_id}/files", response_model=FileList, summary="The customer's files on the order")
async def list_files(order_id: str, principal: FileReader, session: SessionDep) -> Any:
    return FileList(
        items=[FileRead.model_validate(f) for f in await service.files_of(session, principal, order_id)]
    )


@router.get(
    "/{order_id}/files/{file_id}",
    response_class=StreamingResponse,
    summary="Download one of the customer's files (ETag and Repr-Digest carry its SHA-256)",
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The file",
            **response_headers(200, ETAG)[200],
        }
    },
)
async def download_file(
    order_id: str, file_id: str, principal: FileReader, session: SessionDep, container: ContainerDep
) -> Response:
    found = await service.file_to_download(session, principal, order_id, file_id)
    digest = base64.b64encode(bytes.fromhex(found.sha256)).decode()
    return await download_response(
        container.customer_files,
        found.storage_key,
        size=found.size,
        sha256=found.sha256,
        media_type=found.media_type,
        filename=clean_file_name(found.file_name) or f"file-{found.id}",
        headers={
            "ETag": f'"{found.sha256}"',
            "Repr-Digest": f"sha-256=:{digest}:",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=0",
        },
        what=f"file {file_id}",
    )


@router.post(
    "/{order_id}/receipts",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="The customer opened the solution or a document (the first time is kept)",
)
async def record_receipt(
    order_id: str, body: ReceiptCreate, principal: ThreadReader, uow: UowDep
) -> Response:
    await service.record_receipt(uow, principal, order_id, body.item, body.document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
