"""order-intake's view of case-handling's events (tolerant readers, never case-handling's code).

Only the fields order-intake uses are declared; what case-handling adds later
is ignored, so the two services deploy independently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from casebridge_shared.events import EventReader, published_by

CASE_OPENED = "casebridge.cases.case-opened.v1"
CASE_ASSIGNED = "casebridge.cases.case-assigned.v1"
STATUS_CHANGED = "casebridge.cases.status-changed.v1"
ANALYSIS_RECORDED = "casebridge.cases.analysis-recorded.v1"
COMMUNICATION_RECORDED = "casebridge.cases.communication-recorded.v1"
SOLUTION_PROPOSED = "casebridge.cases.solution-proposed.v1"
ATTACHMENT_ADDED = "casebridge.cases.attachment-added.v1"
CASE_CLOSED = "casebridge.cases.case-closed.v1"
CASE_CANCELLED = "casebridge.cases.case-cancelled.v1"
CASE_MESSAGE_POSTED = "casebridge.cases.message-posted.v1"

# case-handling's API limits (its request models and columns; tests/test_event_rules.py keeps them
# in step): a longer field can only come from a broken or forged producer and is dead-lettered with
# the field named, never shown to the customer.
Id = Annotated[str, Field(min_length=1, max_length=36)]

CaseStatus = Literal["new", "assigned", "in_progress", "solution_proposed", "closed", "cancelled"]


class CaseEvent(EventReader):
    case_id: Id
    order_id: Id
    customer_id: Id
    status: CaseStatus
    at: datetime


class CaseOpened(CaseEvent):
    product_title: Annotated[str, Field(max_length=200)]


class CaseAssigned(CaseEvent):
    assignee_name: Annotated[str | None, Field(max_length=200)] = None


class CommunicationRecorded(CaseEvent):
    channel: Literal["phone", "email", "meeting", "message"]
    direction: Literal["inbound", "outbound"]
    occurred_at: datetime
    customer_visible_summary: Annotated[str | None, Field(max_length=10_000)] = None


class SolutionProposed(CaseEvent):
    solution_summary: Annotated[str, Field(max_length=2_000)]
    solution_text: Annotated[str, Field(max_length=100_000)]


class AttachmentAdded(CaseEvent):
    # Becomes a file name on our disk: only what an id looks like gets in.
    attachment_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,35}$")
    visibility: Literal["customer", "internal"]
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size: int = Field(ge=0)
    media_type: Annotated[str, Field(max_length=127)]
    file_name: Annotated[str | None, Field(max_length=255)] = None


class CaseCancelled(CaseEvent):
    reason: Annotated[str | None, Field(max_length=2000)] = None


class CaseMessagePosted(CaseEvent):
    """A staff reply on the order's thread (case-handling's MessageCreate: 1..5000 characters)."""

    message_id: Id
    author_name: Annotated[str | None, Field(max_length=200)] = None
    body: Annotated[str, Field(min_length=1, max_length=5_000)]


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    CASE_OPENED: CaseOpened,
    CASE_ASSIGNED: CaseAssigned,
    STATUS_CHANGED: CaseEvent,
    ANALYSIS_RECORDED: CaseEvent,
    COMMUNICATION_RECORDED: CommunicationRecorded,
    SOLUTION_PROPOSED: SolutionProposed,
    ATTACHMENT_ADDED: AttachmentAdded,
    CASE_CLOSED: CaseEvent,
    CASE_CANCELLED: CaseCancelled,
    CASE_MESSAGE_POSTED: CaseMessagePosted,
}

# Only case-handling publishes case events (its contract, docs/events); from another source: refused.
SOURCES: dict[str, str] = published_by("case-handling", *PAYLOAD_MODELS)
