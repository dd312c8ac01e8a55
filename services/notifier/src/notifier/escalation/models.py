"""Claim timers of new cases, kept in the database so they survive restarts."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field

from casebridge_shared.db import UTCDateTime
from notifier.db import Base


class ClaimTimer(Base, table=True):
    __tablename__ = "claim_timers"

    case_id: str = Field(primary_key=True, max_length=36)
    order_id: str = Field(max_length=36)
    product_category: str = Field(max_length=100)
    product_title: str = Field(max_length=200)
    opened_at: datetime = Field(sa_type=UTCDateTime)
    first_due_at: datetime = Field(sa_type=UTCDateTime)
    second_due_at: datetime = Field(sa_type=UTCDateTime)
    # 0: nothing sent; 1: first escalation sent; 2: both sent.
    escalations_sent: int = 0
    # Set when someone claimed the case (or it ended): the timer stops.
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    next_due_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    # The span that opened the case (its case-opened consumer span): an escalation is sent
    # in a child of it, so the supervisors' alert is on the order's trace too (ADR-0049).
    traceparent: str | None = Field(default=None, max_length=55)
