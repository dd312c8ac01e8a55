"""Routes: the order's thread as staff see it on the case, and their replies (issue 26)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from case_handling.cases import service as cases
from case_handling.cases.models import MessageCreate, MessageList, MessageRead
from case_handling.threads import service
from casebridge_shared.auth import StaffUser
from casebridge_shared.deps import SessionDep, UowDep
from casebridge_shared.idempotency import IdempotencyKey, mark_replayed
from casebridge_shared.openapi import IDEMPOTENT_REPLAYED, LOCATION, response_headers
from casebridge_shared.problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/cases", tags=["case thread"], responses=PROBLEM_RESPONSES)


@router.get(
    "/{case_id}/messages",
    response_model=MessageList,
    summary="The thread with the customer, oldest first: messages, replies, customer-visible communications",
)
async def list_messages(_staff: StaffUser, case_id: str, session: SessionDep) -> Any:
    case = await cases.get_case(session, case_id)
    return MessageList(items=await service.thread(session, case))


@router.post(
    "/{case_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageRead,
    summary="Reply to the customer (reaches the order's thread in order-intake as an event)",
    responses=response_headers(201, LOCATION, IDEMPOTENT_REPLAYED),
)
async def post_message(
    principal: StaffUser,
    case_id: str,
    body: MessageCreate,
    uow: UowDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    message, replayed = await service.post_reply(uow, principal, case_id, body.body, idempotency_key)
    response.headers["Location"] = f"/cases/{case_id}/messages"
    mark_replayed(response, replayed)
    return MessageRead(
        id=message.id,
        author="staff",
        author_name=message.author_name,
        body=message.body,
        at=message.at,
        source="message",
    )
