"""Read rights granted by admin (SPEC B3, B6): per department and table, or a customer's own progress."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Index
from sqlmodel import Field

from casebridge_shared.auth import Department
from casebridge_shared.db import UTCDateTime
from customer_ledger.db import Base

# The customer-information tables a grant can open, and the fields each has.
GRANTABLE_FIELDS: dict[str, frozenset[str]] = {
    "customers": frozenset(
        {"id", "full_name", "email", "phone", "organisation", "address", "stage", "created_at", "updated_at"}
        | {"version"}
    ),
    "demands": frozenset(
        {"id", "customer_id", "title", "description", "category", "status", "registered_by", "order_id"}
        | {"order_version", "created_at", "updated_at", "version"}
    ),
    "associations": frozenset({"id", "customer_id", "department", "reason", "since"}),
    "progress": frozenset(
        {"id", "customer_id", "project", "stage", "note", "department", "recorded_by", "at", "version"}
    ),
    "payments": frozenset(
        {"id", "customer_id", "amount", "currency", "reference", "received_at", "note", "recorded_by"}
        | {"recorded_at", "version"}
    ),
}
# Always shown with any field list, so rows stay addressable.
KEY_FIELDS = frozenset({"id", "customer_id"})

TableName = Literal["customers", "demands", "associations", "progress", "payments"]
Scope = Literal["associated", "all"]


class Grant(Base, table=True):
    __tablename__ = "grants"
    __table_args__ = (Index("ix_grants_department_table", "department", "table"),)

    id: str = Field(primary_key=True, max_length=36)
    grantee: str = Field(max_length=16)  # department | customer
    department: str | None = Field(default=None, max_length=16)
    # For a customer grant: whose progress; None means every customer's own.
    customer_id: str | None = Field(default=None, max_length=36)
    table: str = Field(max_length=32)
    scope: str = Field(max_length=16)  # associated | all | own
    fields: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    granted_by: str = Field(max_length=64)
    granted_at: datetime = Field(sa_type=UTCDateTime)


class GrantCreate(BaseModel):
    """Either a department's read right on a table, or customers' sight of their own progress."""

    model_config = ConfigDict(extra="forbid")

    department: Department | None = None
    customer_id: str | None = PydanticField(default=None, min_length=1, max_length=36)
    all_customers: bool = PydanticField(
        default=False, description="A customer grant for every customer (B6), instead of one customer_id"
    )
    table: TableName
    scope: Scope = PydanticField(
        default="associated", description="Department grants: only associated customers, or all"
    )
    fields: list[str] | None = PydanticField(
        default=None, min_length=1, max_length=32, description="Only these fields (default: every field)"
    )
    reason: str | None = PydanticField(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one_grantee(self) -> GrantCreate:
        grantees = sum((self.department is not None, self.customer_id is not None, self.all_customers))
        if grantees != 1:
            raise ValueError("name exactly one grantee: department, customer_id or all_customers")
        if self.department is None and self.table != "progress":
            raise ValueError("customers can be granted their own project progress only (table 'progress')")
        if self.fields is not None:
            unknown = sorted(set(self.fields) - GRANTABLE_FIELDS[self.table])
            if unknown:
                raise ValueError(f"{self.table} has no field(s) {', '.join(unknown)}")
        return self


class GrantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    grantee: Literal["department", "customer"]
    department: str | None
    customer_id: str | None
    table: str
    scope: str
    fields: list[str] | None
    granted_by: str
    granted_at: datetime
