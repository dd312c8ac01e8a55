"""The notifier's view of case-handling's events (tolerant readers, never case-handling's code)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

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
CUSTOMER_MESSAGE = "casebridge.cases.customer-message-received.v1"

ALL_CASE_EVENTS = (
    CASE_OPENED,
    CASE_ASSIGNED,
    STATUS_CHANGED,
    ANALYSIS_RECORDED,
    COMMUNICATION_RECORDED,
    SOLUTION_PROPOSED,
    ATTACHMENT_ADDED,
    CASE_CLOSED,
    CASE_CANCELLED,
    CUSTOMER_MESSAGE,
)


# case-handling's API limits (its request models and columns; tests/test_event_rules.py keeps them
# in step): a longer field can only come from a broken or forged producer; dead-lettered, field named.
Id = Annotated[str, Field(min_length=1, max_length=36)]
UserId = Annotated[str, Field(max_length=100)]


class CaseEvent(EventReader):
    case_id: Id
    order_id: Id
    customer_id: Id
    status: Annotated[str, Field(max_length=32)]
    at: datetime


class CaseOpened(CaseEvent):
    product_category: Annotated[str, Field(max_length=100)]
    product_title: Annotated[str, Field(max_length=200)]


class CaseAssigned(CaseEvent):
    assignee_id: UserId
    assignee_name: Annotated[str | None, Field(max_length=200)] = None
    assigned_by: Annotated[str | None, Field(max_length=100)] = None


class SolutionProposed(CaseEvent):
    solution_summary: Annotated[str, Field(max_length=2_000)]
    proposed_by: Annotated[str | None, Field(max_length=100)] = None


class CaseCancelled(CaseEvent):
    reason: Annotated[str | None, Field(max_length=2000)] = None
    assignee_id: Annotated[str | None, Field(max_length=100)] = None


class CustomerMessageReceived(CaseEvent):
    message_id: Id
    assignee_id: Annotated[str | None, Field(max_length=100)] = None
    product_category: Annotated[str, Field(max_length=100)]


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    CASE_OPENED: CaseOpened,
    CASE_ASSIGNED: CaseAssigned,
    SOLUTION_PROPOSED: SolutionProposed,
    CASE_CANCELLED: CaseCancelled,
    **{t: CaseEvent for t in (STATUS_CHANGED, ANALYSIS_RECORDED, COMMUNICATION_RECORDED, ATTACHMENT_ADDED)},
    CASE_CLOSED: CaseEvent,
    CUSTOMER_MESSAGE: CustomerMessageReceived,
}

# Only case-handling publishes case events (its contract, docs/events); from another source: refused.
SOURCES: dict[str, str] = published_by("case-handling", *PAYLOAD_MODELS)
