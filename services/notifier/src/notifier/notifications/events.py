"""The notifier's view of case-handling's events (tolerant readers, never case-handling's code)."""

from __future__ import annotations

from datetime import datetime

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
)


class CaseEvent(EventReader):
    case_id: str
    order_id: str
    customer_id: str
    status: str
    at: datetime


class CaseOpened(CaseEvent):
    product_category: str
    product_title: str


class CaseAssigned(CaseEvent):
    assignee_id: str
    assignee_name: str | None = None
    assigned_by: str | None = None


class SolutionProposed(CaseEvent):
    solution_summary: str
    proposed_by: str | None = None


class CaseCancelled(CaseEvent):
    reason: str | None = None
    assignee_id: str | None = None


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    CASE_OPENED: CaseOpened,
    CASE_ASSIGNED: CaseAssigned,
    SOLUTION_PROPOSED: SolutionProposed,
    CASE_CANCELLED: CaseCancelled,
    **{t: CaseEvent for t in (STATUS_CHANGED, ANALYSIS_RECORDED, COMMUNICATION_RECORDED, ATTACHMENT_ADDED)},
    CASE_CLOSED: CaseEvent,
}

# Only case-handling publishes case events (its contract, docs/events); from another source: refused.
SOURCES: dict[str, str] = published_by("case-handling", *PAYLOAD_MODELS)
