"""Case events on ``casebridge.cases.v1`` (key: case id). The contract with order-intake,
the notifier, the ledger and integrators.

Only what the customer may see leaves in these payloads: internal analysis,
internal communication summaries and internal attachments' names stay in
case-handling (the event says that something happened, not what).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from casebridge_shared.classification import INTERNAL, PERSONAL, PSEUDONYMOUS, PUBLIC, SENSITIVE_PERSONAL
from casebridge_shared.events import CASES_TOPIC, EventPayload

CaseStatus = Literal["new", "assigned", "in_progress", "solution_proposed", "closed", "cancelled"]


class _CaseEvent(EventPayload):
    topic = CASES_TOPIC

    case_id: Annotated[str, INTERNAL]
    order_id: Annotated[str, INTERNAL]
    customer_id: Annotated[str, PSEUDONYMOUS]
    status: Annotated[CaseStatus, INTERNAL]
    at: Annotated[datetime, INTERNAL]


class CaseOpened(_CaseEvent):
    event_type = "casebridge.cases.case-opened.v1"
    summary = "An order became a case on the case-handling platform."
    product_category: Annotated[str, PUBLIC]
    product_title: Annotated[str, PUBLIC]


class CaseAssigned(_CaseEvent):
    event_type = "casebridge.cases.case-assigned.v1"
    summary = "A staff member took the case or a supervisor assigned it."
    assignee_id: Annotated[str, PSEUDONYMOUS]
    assignee_name: Annotated[str | None, PERSONAL]
    assigned_by: Annotated[str, PSEUDONYMOUS]
    product_category: Annotated[str, PUBLIC]


class CaseStatusChanged(_CaseEvent):
    event_type = "casebridge.cases.status-changed.v1"
    summary = "The case moved to another state."
    previous_status: Annotated[CaseStatus, INTERNAL]


class AnalysisRecorded(_CaseEvent):
    event_type = "casebridge.cases.analysis-recorded.v1"
    summary = "Staff recorded their analysis of the legal need (the text stays internal)."


class CommunicationRecorded(_CaseEvent):
    event_type = "casebridge.cases.communication-recorded.v1"
    summary = "A contact with the customer was recorded; the summary only if customer-visible."
    channel: Annotated[Literal["phone", "email", "meeting", "message"], INTERNAL]
    direction: Annotated[Literal["inbound", "outbound"], INTERNAL]
    occurred_at: Annotated[datetime, INTERNAL]
    customer_visible_summary: Annotated[str | None, SENSITIVE_PERSONAL]


class SolutionProposed(_CaseEvent):
    event_type = "casebridge.cases.solution-proposed.v1"
    summary = "Staff proposed the legal solution to the customer."
    solution_summary: Annotated[str, SENSITIVE_PERSONAL]
    solution_text: Annotated[str, SENSITIVE_PERSONAL]
    proposed_by: Annotated[str, PSEUDONYMOUS]


class AttachmentAdded(_CaseEvent):
    event_type = "casebridge.cases.attachment-added.v1"
    summary = "A document was uploaded to the case; customer-visible ones are fetched by order-intake."
    attachment_id: Annotated[str, INTERNAL]
    visibility: Annotated[Literal["customer", "internal"], INTERNAL]
    sha256: Annotated[str, INTERNAL]
    size: Annotated[int, INTERNAL]
    media_type: Annotated[str, INTERNAL]
    # Only for customer-visible attachments; an internal file's name stays internal.
    file_name: Annotated[str | None, SENSITIVE_PERSONAL]


class CaseClosed(_CaseEvent):
    event_type = "casebridge.cases.case-closed.v1"
    summary = "The case was closed: the work is done."


class CaseCancelled(_CaseEvent):
    event_type = "casebridge.cases.case-cancelled.v1"
    summary = "The case was cancelled (the order was cancelled, or staff cancelled it)."
    reason: Annotated[str | None, SENSITIVE_PERSONAL]
    assignee_id: Annotated[str | None, PSEUDONYMOUS]


class StaffReplied(_CaseEvent):
    event_type = "casebridge.cases.message-posted.v1"
    summary = "Staff replied to the customer on the order's thread (the customer sees the body)."
    message_id: Annotated[str, INTERNAL]
    author_id: Annotated[str, PSEUDONYMOUS]
    author_name: Annotated[str | None, PERSONAL]
    body: Annotated[str, SENSITIVE_PERSONAL]


class CustomerMessageReceived(_CaseEvent):
    event_type = "casebridge.cases.customer-message-received.v1"
    summary = (
        "The customer wrote on the order's thread; the notifier alerts the assignee, or the team "
        "the product category routes to when nobody has the case (the text stays in case-handling)."
    )
    message_id: Annotated[str, INTERNAL]
    assignee_id: Annotated[str | None, PSEUDONYMOUS]
    product_category: Annotated[str, PUBLIC]
