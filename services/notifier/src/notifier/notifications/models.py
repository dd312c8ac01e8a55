"""In-app notifications: what a staff member is told, in the order they were told it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field

from casebridge_shared.db import StrEnumType, UTCDateTime, utcnow
from notifier.db import Base


class Kind(StrEnum):
    """What happened, in the staff's words; preferences are set per kind."""

    CASE_OPENED = "case_opened"  # a new case waits for someone to take it
    CASE_ASSIGNED = "case_assigned"  # a case is now yours
    SOLUTION_PROPOSED = "solution_proposed"  # for supervisors: a solution went out
    CASE_CANCELLED = "case_cancelled"  # a case you had was cancelled
    CASE_ESCALATED = "case_escalated"  # nobody took a new case in time
    CUSTOMER_MESSAGE = "customer_message"  # the customer wrote on a case you work (or your team's)


class Channel(StrEnum):
    IN_APP = "in_app"
    PUSH = "push"
    EMAIL = "email"
    WEBHOOK = "webhook"


class Notification(Base, table=True):
    __tablename__ = "notifications"
    __table_args__ = (
        # ``seq`` numbers one person's notifications 1, 2, 3 ... in commit
        # order: the live stream's event id, so a reconnect resumes exactly.
        UniqueConstraint("recipient_id", "seq", name="uq_notifications_recipient_seq"),
        # The same happening never notifies the same person twice.
        UniqueConstraint("recipient_id", "dedupe_key", name="uq_notifications_recipient_dedupe"),
        Index("ix_notifications_recipient_unread", "recipient_id", "read_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    recipient_id: str = Field(max_length=36)
    seq: int
    # The event id for case events; ``escalation:<case>:<level>`` for escalations.
    dedupe_key: str = Field(max_length=120)
    kind: Kind = Field(sa_column=Column(StrEnumType(Kind, 32), nullable=False))
    case_id: str = Field(max_length=36, index=True)
    order_id: str = Field(max_length=36)
    title: str = Field(max_length=200)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The span that made it (the consumer's span for the case event): the live stream's
    # delivery continues that trace. Internal: not in NotificationRead.
    traceparent: str | None = Field(default=None, max_length=55)


class NotificationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    seq: int
    kind: Kind
    case_id: str
    order_id: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    total: int
    unread: int
    limit: int
    offset: int
    stream_position: int
    next_cursor: str | None = Field(
        default=None,
        description="Send as `cursor` (with the same `unread_only`) for the notifications after "
        "these; null on the last page",
    )


class UnreadCount(BaseModel):
    unread: int
    stream_position: int


class ReadAllResult(BaseModel):
    marked_read: int
