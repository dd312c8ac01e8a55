"""Routes: the customer's solution documents, served from order-intake's own copies (A7, A9)."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import StreamingResponse

from casebridge_shared.auth import STAFF_ROLES, Principal, Role, require_roles
from casebridge_shared.files import clean_file_name
from casebridge_shared.openapi import ETAG, response_headers
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.storage import download_response
from order_intake.deps import ContainerDep, SessionDep
from order_intake.documents import service
from order_intake.documents.models import DocumentRead
from order_intake.threads import service as threads

router = APIRouter(prefix="/orders", tags=["documents"], responses=PROBLEM_RESPONSES)

DocumentReader = Annotated[Principal, Depends(require_roles(Role.CUSTOMER, *STAFF_ROLES))]


@router.get(
    "/{order_id}/documents",
    response_model=list[DocumentRead],
    summary="The documents of an order (a customer sees only their own orders')",
)
async def list_documents(order_id: str, principal: DocumentReader, session: SessionDep) -> list[DocumentRead]:
    return [DocumentRead.model_validate(d) for d in await service.documents_of(session, principal, order_id)]


@router.get(
    "/{order_id}/documents/{document_id}",
    response_class=StreamingResponse,
    summary="Download a document, with its content type, file name and SHA-256",
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The document",
            **response_headers(200, ETAG)[200],
        }
    },
)
async def download_document(
    order_id: str, document_id: str, principal: DocumentReader, session: SessionDep, container: ContainerDep
) -> Response:
    document = await service.document_to_download(session, principal, order_id, document_id)

    async def read_receipt() -> None:
        if Role.CUSTOMER in principal.roles:
            # The customer opening their document is its read receipt (the first time is kept).
            async with container.uow() as uow:
                await threads.record_document_download(uow, principal, order_id, document.id)

    # Missing from storage: 404 and no receipt; not what was recorded: never served as if
    # whole (download_response).
    return await download_response(
        container.documents,
        service.storage_key(document),
        size=document.size,
        sha256=document.sha256,
        media_type=document.media_type,
        filename=clean_file_name(document.file_name) or f"document-{document.id}",
        headers={
            "ETag": f'"{document.sha256}"',
            # RFC 9530: the customer (or their software) can check what arrived.
            "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(document.sha256)).decode()}:",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=0",
        },
        what=f"document {document_id}",
        before_answer=read_receipt,
    )
