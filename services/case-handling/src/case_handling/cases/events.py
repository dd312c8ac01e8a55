"""Case events on ``casebridge.cases.v1`` (key: case id). The contract with order-intake,
the notifier, the ledger and integrators.

Only what the customer may see leaves in these payloads: internal analysis,
internal communication summaries and internal attachments' names stay in
case-handling (the event says that something happened, not what).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from casebridge_shared.events import CASES_TOPIC, EventPayload

CaseStatus = Literal["new", "assigned", "in_progress", "solution_proposed", "closed", "cancelled"]


class _CaseEvent(EventPayload):
    topic = CASES_TOPIC

    case_id: str
    order_id: str
    customer_id: str
    status: CaseStatus
    at: datetime


class CaseOpened(_CaseEvent):
    event_type = "casebridge.cases.case-opened.v1"
    summary = "An order became a case on the case-handling platform."
    product_category: str
    product_title: str


class CaseAssigned(_CaseEvent):
    event_type = "casebridge.cases.case-assigned.v1"
    summary = "A staff member took the case or a supervisor assigned it."
    assignee_id: str
    assignee_name: str | None
    assigned_by: str
    product_category: str


class CaseStatusChanged(_CaseEvent):
    event_type = "casebridge.cases.status-changed.v1"
    summary = "The case moved to another state."
    previous_status: CaseStatus


class AnalysisRecorded(_CaseEvent):
    event_type = "casebridge.cases.analysis-recorded.v1"
    summary = "Staff recorded their analysis of the legal need (the text stays internal)."


class CommunicationRecorded(_CaseEvent):
    event_type = "casebridge.cases.communication-recorded.v1"
    summary = "A contact with the customer was recorded; the summary only if customer-visible."
    channel: Literal["phone", "email", "meeting", "message"]
    direction: Literal["inbound", "outbound"]
    occurred_at: datetime
    customer_visible_summary: str | None


class SolutionProposed(_CaseEvent):
    event_type = "casebridge.cases.solution-proposed.v1"
    summary = "Staff proposed the legal solution to the customer."
    solution_summary: str
    solution_text: str
    proposed_by: str


class AttachmentAdded(_CaseEvent):
    event_type = "casebridge.cases.attachment-added.v1"
    summary = "A document was uploaded to the case; customer-visible ones are fetched by order-intake."
    attachment_id: str
    visibility: Literal["customer", "internal"]
    sha256: str
    size: int
    media_type: str
    # Only for customer-visible attachments; an internal file's name stays internal.
    file_name: str | None


class CaseClosed(_CaseEvent):
    event_type = "casebridge.cases.case-closed.v1"
    summary = "The case was closed: the work is done."


class CaseCancelled(_CaseEvent):
    event_type = "casebridge.cases.case-cancelled.v1"
    summary = "The case was cancelled (the order was cancelled, or staff cancelled it)."
    reason: str | None
    assignee_id: str | None


class StaffReplied(_CaseEvent):
    event_type = "casebridge.cases.message-posted.v1"
    summary = "Staff replied to the customer on the order's thread (the customer sees the body)."
    message_id: str
    author_id: str
    author_name: str | None
    body: str


class CustomerMessageReceived(_CaseEvent):
    event_type = "casebridge.cases.customer-message-received.v1"
    summary = (
        "The customer wrote on the order's thread; the notifier alerts the assignee, or the team "
        "the product category routes to when nobody has the case (the text stays in case-handling)."
    )
    message_id: str
    assignee_id: str | None
    product_category: str
