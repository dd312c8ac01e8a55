"""Cases, their timeline, attachments and the staff's copy of the catalog (A5, A6, A8)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field

from case_handling.db import Base
from casebridge_shared.db import StrEnumType, UTCDateTime, new_id, utcnow


class CaseStatus(StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    SOLUTION_PROPOSED = "solution_proposed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({CaseStatus.CLOSED, CaseStatus.CANCELLED})

# Which state each action may start from (the state machine of A6).
ALLOWED_FROM: dict[str, frozenset[CaseStatus]] = {
    "claim": frozenset({CaseStatus.NEW, CaseStatus.ASSIGNED}),
    "assign": frozenset({CaseStatus.NEW, CaseStatus.ASSIGNED, CaseStatus.IN_PROGRESS}),
    "start": frozenset({CaseStatus.ASSIGNED}),
    "solution": frozenset({CaseStatus.IN_PROGRESS, CaseStatus.SOLUTION_PROPOSED}),
    "close": frozenset({CaseStatus.SOLUTION_PROPOSED}),
    "cancel": frozenset(
        {CaseStatus.NEW, CaseStatus.ASSIGNED, CaseStatus.IN_PROGRESS, CaseStatus.SOLUTION_PROPOSED}
    ),
    "work": frozenset(
        {CaseStatus.NEW, CaseStatus.ASSIGNED, CaseStatus.IN_PROGRESS, CaseStatus.SOLUTION_PROPOSED}
    ),
}


class Case(Base, table=True):
    """An order being worked on; the service information is what staff need to do it (A5)."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_status_created", "status", "created_at"),
        Index("ix_cases_assignee", "assignee_id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    order_id: str = Field(max_length=36, unique=True)
    order_version: int = 1  # the aggregateversion of the last order event applied
    customer_id: str = Field(max_length=36, index=True)
    customer: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    product_id: str = Field(max_length=36)
    product: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    product_title: str = Field(max_length=200)
    product_category: str = Field(max_length=100, index=True)
    price: str = Field(max_length=40)
    currency: str = Field(max_length=3)
    description: str = Field(sa_column=Column(Text, nullable=False))
    priority: str = Field(default="normal", max_length=16)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    internal_notes: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    status: CaseStatus = Field(
        default=CaseStatus.NEW, sa_column=Column(StrEnumType(CaseStatus, 32), nullable=False)
    )
    assignee_id: str | None = Field(default=None, max_length=100)
    assignee_name: str | None = Field(default=None, max_length=200)
    solution_summary: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    solution_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    version: int = 1
    order_placed_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CaseEntry(Base, table=True):
    """One step on a case's timeline: a status change, analysis, communication, solution..."""

    __tablename__ = "case_entries"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    case_id: str = Field(sa_column=Column(String(36), ForeignKey("cases.id"), nullable=False, index=True))
    kind: str = Field(max_length=32)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    author_id: str | None = Field(default=None, max_length=100)
    author_name: str | None = Field(default=None, max_length=200)
    # the case's status after this entry
    status: CaseStatus = Field(sa_column=Column(StrEnumType(CaseStatus, 32), nullable=False))
    customer_visible: bool = False
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Attachment(Base, table=True):
    __tablename__ = "attachments"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    case_id: str = Field(sa_column=Column(String(36), ForeignKey("cases.id"), nullable=False, index=True))
    file_name: str = Field(max_length=255)
    media_type: str = Field(max_length=127)
    size: int
    sha256: str = Field(max_length=64)
    visibility: str = Field(max_length=16)
    storage_key: str = Field(max_length=300)  # path under the storage directory
    uploaded_by: str = Field(max_length=100)
    uploaded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # "customer": a file the customer attached to the order, copied from order-intake.
    origin: str = Field(default="staff", max_length=16, sa_column_kwargs={"server_default": "staff"})


class CaseMessage(Base, table=True):
    """One message of the order's thread: the customer's (from order-intake) or a staff reply."""

    __tablename__ = "case_messages"
    __table_args__ = (
        Index("ix_case_messages_case_at", "case_id", "at"),
        # A staff reply posted again with its Idempotency-Key is found, not written twice
        # (NULL keys, every customer message and keyless reply, never collide).
        UniqueConstraint("case_id", "author_id", "idempotency_key", name="uq_case_messages_idempotency"),
    )

    # order-intake's message id for the customer's, ours for replies: one row per message
    # however often its event is delivered.
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    case_id: str = Field(sa_column=Column(String(36), ForeignKey("cases.id"), nullable=False))
    author: str = Field(max_length=16)
    author_id: str | None = Field(default=None, max_length=100)
    author_name: str | None = Field(default=None, max_length=200)
    body: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)


class CustomerFileFetchStatus(StrEnum):
    PENDING = "pending"  # announced by order-intake, not yet here
    STORED = "stored"  # fetched, hash checked, an attachment of the case
    REJECTED = "rejected"  # what arrived did not match the announced SHA-256; never stored


class CustomerFileFetch(Base, table=True):
    """A customer's file announced by order-intake and how copying it here is going."""

    __tablename__ = "customer_file_fetches"
    __table_args__ = (Index("ix_customer_file_fetches_due", "status", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=36)  # order-intake's file id = the attachment's id
    case_id: str = Field(sa_column=Column(String(36), ForeignKey("cases.id"), nullable=False, index=True))
    order_id: str = Field(max_length=36)
    customer_id: str = Field(max_length=36)
    file_name: str = Field(max_length=255)
    media_type: str = Field(max_length=127)
    size: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), nullable=False))
    sha256: str = Field(max_length=64)
    uploaded_at: datetime = Field(sa_type=UTCDateTime)
    status: CustomerFileFetchStatus = Field(
        default=CustomerFileFetchStatus.PENDING,
        sa_column=Column(StrEnumType(CustomerFileFetchStatus, 16), nullable=False),
    )
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class CaseReceipt(Base, table=True):
    """When the customer first opened the solution or a document (from order-intake's receipts)."""

    __tablename__ = "case_receipts"
    __table_args__ = (UniqueConstraint("case_id", "item", "document_id", name="uq_case_receipts_item"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    case_id: str = Field(sa_column=Column(String(36), ForeignKey("cases.id"), nullable=False, index=True))
    item: str = Field(max_length=16)
    document_id: str = Field(default="", max_length=36)  # "" for the solution
    read_at: datetime = Field(sa_type=UTCDateTime)


class CatalogProduct(Base, table=True):
    """The staff's reference copy of order-intake's catalog (from casebridge.catalog.v1)."""

    __tablename__ = "catalog_products"

    id: str = Field(primary_key=True, max_length=36)
    title: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    deliverables: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    category: str = Field(max_length=100)
    price: str = Field(max_length=40)
    currency: str = Field(max_length=3)
    active: bool = True
    archived: bool = False
    version: int = 1
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- API shapes -----------------------------------------------------------------


Channel = Literal["phone", "email", "meeting", "message"]
Direction = Literal["inbound", "outbound"]
Visibility = Literal["customer", "internal"]


class CaseSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    order_id: str
    customer_id: str
    product_title: str
    product_category: str
    status: CaseStatus
    priority: str
    assignee_id: str | None
    assignee_name: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None
    # The console's queue: who ordered, when the case is due by its service level, and
    # whether it is past that (docs/case-handling.md, "Service level").
    customer_name: str | None = None
    sla_due_at: datetime | None = None
    overdue: bool = False


class TimelineEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    at: datetime
    author_id: str | None
    author_name: str | None
    status: str
    customer_visible: bool
    data: dict[str, Any]


class AttachmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    case_id: str
    file_name: str
    media_type: str
    size: int
    sha256: str
    visibility: Visibility
    uploaded_by: str
    uploaded_at: datetime
    origin: Literal["staff", "customer"] = "staff"


class DocumentReceipt(BaseModel):
    attachment_id: str
    read_at: datetime


class Receipts(BaseModel):
    """What the customer has opened, and when first (issue 26 "Read receipts")."""

    solution_read_at: datetime | None = None
    documents: list[DocumentReceipt] = []


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = PydanticField(min_length=1, max_length=5000, description="1 to 5000 characters")

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        trimmed = value.strip()
        if not trimmed:
            raise ValueError("the message is empty")
        return trimmed


class MessageRead(BaseModel):
    id: str
    author: Literal["customer", "staff"]
    author_name: str | None
    body: str
    at: datetime
    source: Literal["message", "communication"]


class MessageList(BaseModel):
    items: list[MessageRead]


class CaseRead(CaseSummary):
    customer: dict[str, Any]
    product_id: str
    product: dict[str, Any]
    price: str
    currency: str
    description: str
    internal_notes: str | None
    solution_summary: str | None
    solution_text: str | None
    order_placed_at: datetime
    closed_at: datetime | None
    cancelled_at: datetime | None
    timeline: list[TimelineEntry] = []
    attachments: list[AttachmentRead] = []
    receipts: Receipts = Receipts()
    # What the caller may do now (the state machine and rules.authorize_write): the
    # console offers these and nothing else, so no rule is repeated in its code.
    allowed_actions: list[str] = []


class QueueCounts(BaseModel):
    """How many open cases each of the console's queues holds."""

    open: int
    unassigned: int
    mine: int
    team: int
    overdue: int


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee_id: str = PydanticField(min_length=1, max_length=100)
    assignee_name: str | None = PydanticField(default=None, max_length=200)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = PydanticField(min_length=1, max_length=2000)


class AnalysisCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = PydanticField(min_length=1, max_length=50_000)


class CommunicationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    direction: Direction
    summary: str = PydanticField(min_length=1, max_length=10_000)
    occurred_at: datetime
    customer_visible: bool = False


class SolutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: str = PydanticField(min_length=1, max_length=2_000)
    text: str = PydanticField(min_length=1, max_length=100_000)


class CaseUpdate(BaseModel):
    """Service information staff may correct or complete (A8)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = PydanticField(default=None, min_length=1, max_length=20_000)
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    due_at: datetime | None = None
    internal_notes: str | None = PydanticField(default=None, max_length=20_000)
    customer_phone: str | None = PydanticField(default=None, max_length=40)
