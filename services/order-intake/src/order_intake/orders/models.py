"""Orders, their progress timeline and idempotency keys (A2, A3)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field

from casebridge_shared.db import StrEnumType, UTCDateTime, new_id, utcnow
from order_intake.db import Base


class OrderStatus(StrEnum):
    SUBMITTED = "submitted"  # placed, not yet picked up by case handling
    ACCEPTED = "accepted"  # a case was opened for it
    IN_PROGRESS = "in_progress"  # staff are working on it
    SOLUTION_PROPOSED = "solution_proposed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED})
CUSTOMER_CANCELLABLE = frozenset({OrderStatus.SUBMITTED, OrderStatus.ACCEPTED})


class Order(Base, table=True):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_customer_created", "customer_id", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    customer_id: str = Field(max_length=36)
    customer: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    product_id: str = Field(max_length=36, index=True)
    product: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    description: str = Field(sa_column=Column(Text, nullable=False))
    status: OrderStatus = Field(
        default=OrderStatus.SUBMITTED,
        sa_column=Column(StrEnumType(OrderStatus, 32), nullable=False, index=True),
    )
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancel_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    solution_summary: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    solution_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    solution_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OrderProgress(Base, table=True):
    """One time-stamped step on the order's timeline, as the customer sees it."""

    __tablename__ = "order_progress"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    order_id: str = Field(sa_column=Column(String(36), ForeignKey("orders.id"), nullable=False, index=True))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: OrderStatus = Field(sa_column=Column(StrEnumType(OrderStatus, 32), nullable=False))
    title: str = Field(max_length=200)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class IdempotencyKey(Base, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("customer_id", "key", name="uq_idempotency_customer_key"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    customer_id: str = Field(max_length=36)
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    order_id: str = Field(max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


# --- API shapes -----------------------------------------------------------


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str = PydanticField(min_length=1, max_length=36)
    description: str = PydanticField(
        min_length=1, max_length=20_000, description="The legal need, in the customer's words"
    )


class OrderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = PydanticField(min_length=1, max_length=20_000)


class OrderCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = PydanticField(default=None, max_length=2000)


class ProductSnapshot(BaseModel):
    product_id: str
    title: str
    description: str
    deliverables: list[str]
    category: str
    price: Decimal
    currency: str
    version: int


class CustomerContact(BaseModel):
    customer_id: str
    full_name: str
    email: str
    phone: str | None


class ProgressEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    status: str
    title: str
    detail: str | None


class Solution(BaseModel):
    summary: str
    text: str | None
    at: datetime


class OrderRead(BaseModel):
    id: str
    customer_id: str
    product: ProductSnapshot
    description: str
    status: OrderStatus
    version: int
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None
    progress: list[ProgressEntry]
    solution: Solution | None


class OrderSummary(BaseModel):
    id: str
    customer_id: str
    product_id: str
    product_title: str
    status: OrderStatus
    version: int
    created_at: datetime
    updated_at: datetime
