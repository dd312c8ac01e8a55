"""Customer information (SPEC B1, B4): customers, demands, associations, project progress, payments.

These tables are views of the journal: every row is the ``after`` of the last
change entry that touched it, and ``customer-ledger rebuild`` recreates them
from the journal alone. Request bodies are separate models so a caller can
never set what the ledger decides (ids, stage, times).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, field_serializer, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import Column, Index, Integer, Numeric, Text, UniqueConstraint
from sqlmodel import Field

from casebridge_shared.auth import Department
from casebridge_shared.currency import check_amount, money
from casebridge_shared.db import UTCDateTime
from casebridge_shared.params import Omittable
from customer_ledger.db import Base

# The hand-off chain (B2): a customer moves one department to the right.
CHAIN: tuple[Department, ...] = (
    Department.SALES,
    Department.FINANCE,
    Department.PROCESS,
    Department.TECHNICAL,
    Department.AFTER_SALES,
)

DemandStatus = Literal["open", "met", "withdrawn"]


class Customer(Base, table=True):
    __tablename__ = "customers"

    id: str = Field(primary_key=True, max_length=36)
    full_name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=64)
    organisation: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The department that holds the customer in the hand-off chain now.
    stage: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    version: int = 1


class Demand(Base, table=True):
    """A need of the customer, registered by any department or by an order."""

    __tablename__ = "demands"
    __table_args__ = (Index("ix_demands_customer", "customer_id"), UniqueConstraint("order_id"))

    id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=36)
    title: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    category: str | None = Field(default=None, max_length=64)
    status: str = Field(default="open", max_length=16)
    registered_by: str = Field(max_length=64)  # a department, or "orders" for an order
    order_id: str | None = Field(default=None, max_length=36)
    order_version: int | None = None
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    # Bumped by every change (the ETag; If-Match compares it); journal entries keep it.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class Association(Base, table=True):
    """Which department may see which customer (given by hand-off, creation or admin)."""

    __tablename__ = "associations"
    __table_args__ = (
        UniqueConstraint("customer_id", "department"),
        Index("ix_associations_dept", "department"),
    )

    id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=36)
    department: str = Field(max_length=16)
    reason: str = Field(max_length=300)
    since: datetime = Field(sa_type=UTCDateTime)


class ProgressEntry(Base, table=True):
    """One update of a project's progress; entries are never edited, only added (B4)."""

    __tablename__ = "project_progress"
    __table_args__ = (Index("ix_project_progress_customer_at", "customer_id", "at"),)

    id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=36)
    project: str = Field(max_length=100)  # the order id for case progress, else the department's name
    stage: str = Field(max_length=64)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    department: str | None = Field(default=None, max_length=16)
    recorded_by: str = Field(max_length=64)
    at: datetime = Field(sa_type=UTCDateTime)
    # Bumped by every change (the ETag; If-Match compares it); journal entries keep it.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class Payment(Base, table=True):
    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_customer", "customer_id"),)

    id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=36)
    amount: Decimal = Field(sa_column=Column(Numeric(14, 3), nullable=False))
    currency: str = Field(max_length=3)
    reference: str | None = Field(default=None, max_length=100)
    received_at: datetime = Field(sa_type=UTCDateTime)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    recorded_by: str = Field(max_length=64)
    recorded_at: datetime = Field(sa_type=UTCDateTime)
    # Bumped by every change (the ETag; If-Match compares it); journal entries keep it.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))

    @field_serializer("amount")
    def _in_minor_units(self, amount: Decimal) -> str:
        # The column keeps 3 decimals for every currency; records and entries show the currency's own.
        return str(money(amount, self.currency))


# --- request bodies -------------------------------------------------------

_Reason = PydanticField(default=None, min_length=1, max_length=500)
_FeedbackRef = PydanticField(default=None, min_length=1, max_length=100)


class Why(BaseModel):
    """Why a change was made; admin corrections from customer feedback name the feedback (B7)."""

    reason: str | None = _Reason
    feedback_ref: str | None = _FeedbackRef


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full_name: str = PydanticField(min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = PydanticField(default=None, max_length=64)
    organisation: str | None = PydanticField(default=None, max_length=200)
    address: str | None = PydanticField(default=None, max_length=2000)


class CustomerUpdate(Why):
    model_config = ConfigDict(extra="forbid")

    full_name: Omittable[Annotated[str, PydanticField(min_length=1, max_length=200)]] = None
    email: EmailStr | None = None
    phone: str | None = PydanticField(default=None, max_length=64)
    organisation: str | None = PydanticField(default=None, max_length=200)
    address: str | None = PydanticField(default=None, max_length=2000)
    reason: str = PydanticField(min_length=1, max_length=500)


class HandOff(Why):
    model_config = ConfigDict(extra="forbid")

    to: Department | None = PydanticField(
        default=None, description="Default: the next department in the chain (others need admin)"
    )


class DemandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = PydanticField(min_length=1, max_length=200)
    description: str = PydanticField(min_length=1, max_length=10_000)
    category: str | None = PydanticField(default=None, max_length=64)


class DemandUpdate(Why):
    model_config = ConfigDict(extra="forbid")

    title: Omittable[Annotated[str, PydanticField(min_length=1, max_length=200)]] = None
    description: Omittable[Annotated[str, PydanticField(min_length=1, max_length=10_000)]] = None
    status: Omittable[DemandStatus] = None
    reason: str = PydanticField(min_length=1, max_length=500)


class ProgressCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = PydanticField(min_length=1, max_length=100)
    stage: str = PydanticField(min_length=1, max_length=64)
    note: str | None = PydanticField(default=None, max_length=10_000)


class PaymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Decimal = PydanticField(gt=0, max_digits=14, decimal_places=3)
    currency: str = PydanticField(min_length=3, max_length=3, pattern="^[A-Z]{3}$")
    reference: str | None = PydanticField(default=None, max_length=100)
    received_at: datetime
    note: str | None = PydanticField(default=None, max_length=2000)

    @model_validator(mode="after")
    def _amount_fits_currency(self) -> PaymentCreate:
        problem = check_amount(self.amount, self.currency)
        if problem:
            raise ValueError(problem.replace("price", "amount"))
        if self.received_at.tzinfo is None:
            raise ValueError("received_at needs a time zone offset")
        return self


class DemandToRecord(BaseModel):
    """One operation of a bulk request: a demand for a customer."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["demand"]
    customer_id: str = PydanticField(min_length=1, max_length=36)
    record: DemandCreate


class ProgressToRecord(BaseModel):
    """One operation of a bulk request: a progress entry for a customer."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["progress"]
    customer_id: str = PydanticField(min_length=1, max_length=36)
    record: ProgressCreate


class PaymentToRecord(BaseModel):
    """One operation of a bulk request: a payment received from a customer."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["payment"]
    customer_id: str = PydanticField(min_length=1, max_length=36)
    record: PaymentCreate


ToRecord = Annotated[DemandToRecord | ProgressToRecord | PaymentToRecord, PydanticField(discriminator="kind")]


class BulkRecord(BaseModel):
    """Many demands, progress entries and payments, recorded all together or not at all."""

    model_config = ConfigDict(extra="forbid")

    operations: list[ToRecord] = PydanticField(min_length=1)


class Recorded(BaseModel):
    kind: Literal["demand", "progress", "payment"]
    record: Demand | ProgressEntry | Payment


class BulkRecorded(BaseModel):
    """What was recorded, in the order of the operations; each is its own journal entry."""

    items: list[Recorded]


class ProgressCorrection(Why):
    """Admin's correction of a progress entry (B3, B7); the entry's time stays the time it was recorded."""

    model_config = ConfigDict(extra="forbid")

    project: Omittable[Annotated[str, PydanticField(min_length=1, max_length=100)]] = None
    stage: Omittable[Annotated[str, PydanticField(min_length=1, max_length=64)]] = None
    note: str | None = PydanticField(default=None, max_length=10_000)
    reason: str = PydanticField(min_length=1, max_length=500)


class PaymentCorrection(Why):
    """A correction of a recorded payment by finance or admin, with the reason (and the feedback)."""

    model_config = ConfigDict(extra="forbid")

    amount: Omittable[Annotated[Decimal, PydanticField(gt=0, max_digits=14, decimal_places=3)]] = None
    reference: str | None = PydanticField(default=None, max_length=100)
    received_at: Omittable[datetime] = None
    note: str | None = PydanticField(default=None, max_length=2000)
    reason: str = PydanticField(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _aware(self) -> PaymentCorrection:
        if self.received_at is not None and self.received_at.tzinfo is None:
            raise ValueError("received_at needs a time zone offset")
        return self


class AssociationCreate(Why):
    model_config = ConfigDict(extra="forbid")

    department: Department


class Removal(Why):
    model_config = ConfigDict(extra="forbid")

    reason: str = PydanticField(min_length=1, max_length=500)
