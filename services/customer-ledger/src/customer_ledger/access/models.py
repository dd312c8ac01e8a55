"""Access information (SPEC B5): login, change and read records, each a view of journal entries.

Each record's primary key is its place in the journal, so the view rebuilt from
the journal is row for row the live one, and the index is the proof handle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Text
from sqlmodel import Field

from casebridge_shared.db import UTCDateTime
from customer_ledger.db import Base

_BIG = BigInteger().with_variant(Integer, "sqlite")


class LoginRecord(Base, table=True):
    __tablename__ = "login_records"
    __table_args__ = (
        Index("ix_login_records_user_at", "user_id", "at"),
        Index("ix_login_records_at", "at"),
    )

    journal_index: int = Field(sa_column=Column(_BIG, primary_key=True, autoincrement=False))
    user_id: str | None = Field(default=None, max_length=36)
    email: str = Field(max_length=320)
    outcome: str = Field(max_length=16)  # success | failure
    reason: str | None = Field(default=None, max_length=64)
    department: str | None = Field(default=None, max_length=16)
    client_ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(sa_type=UTCDateTime)


class ChangeRecord(Base, table=True):
    """What changed, before and after, who, why and when (change-content and change-time records)."""

    __tablename__ = "change_records"
    __table_args__ = (
        Index("ix_change_records_customer_at", "customer_id", "at"),
        Index("ix_change_records_by_at", "changed_by", "at"),
        Index("ix_change_records_at", "at"),
    )

    journal_index: int = Field(sa_column=Column(_BIG, primary_key=True, autoincrement=False))
    table: str = Field(max_length=32)
    operation: str = Field(max_length=8)  # insert | update | delete
    record_id: str = Field(max_length=36)
    customer_id: str | None = Field(default=None, max_length=36)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    changed_by: str = Field(max_length=64)
    department: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    feedback_ref: str | None = Field(default=None, max_length=100)
    at: datetime = Field(sa_type=UTCDateTime)


class ReadRecord(Base, table=True):
    """Who read which customer's which data; one row per customer a read showed."""

    __tablename__ = "read_records"
    __table_args__ = (
        Index("ix_read_records_customer_at", "customer_id", "at"),
        Index("ix_read_records_reader_at", "reader", "at"),
        Index("ix_read_records_at", "at"),
    )

    journal_index: int = Field(sa_column=Column(_BIG, primary_key=True, autoincrement=False))
    position: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    customer_id: str | None = Field(default=None, max_length=36)
    what: str = Field(max_length=64)
    reader: str = Field(max_length=64)
    department: str | None = Field(default=None, max_length=16)
    at: datetime = Field(sa_type=UTCDateTime)


class RecordCorrection(Base, table=True):
    """An admin's correction of an access record (B3, B7): the record itself stays as journaled.

    Access records are the journal's own entries, so they cannot be edited without
    breaking the proofs; a correction is a later entry that says which fields of
    which record should read differently, why, and on whose feedback.
    """

    __tablename__ = "record_corrections"
    __table_args__ = (Index("ix_record_corrections_of", "of_index"),)

    journal_index: int = Field(sa_column=Column(_BIG, primary_key=True, autoincrement=False))
    of_index: int = Field(sa_column=Column(_BIG, nullable=False))
    record: str = Field(max_length=16)  # login | change | read
    corrected: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    feedback_ref: str | None = Field(default=None, max_length=100)
    corrected_by: str = Field(max_length=64)
    at: datetime = Field(sa_type=UTCDateTime)


class CorrectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corrected: dict[str, Any] = PydanticField(
        min_length=1, max_length=20, description="The fields of the record that should read differently"
    )
    reason: str = PydanticField(min_length=1, max_length=500)
    feedback_ref: str | None = PydanticField(default=None, min_length=1, max_length=100)


class CorrectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    journal_index: int
    of_index: int
    record: str
    corrected: dict[str, Any]
    reason: str
    feedback_ref: str | None
    corrected_by: str
    at: datetime


class LoginRecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    journal_index: int
    user_id: str | None
    email: str
    outcome: Literal["success", "failure"]
    reason: str | None
    department: str | None
    client_ip: str | None
    user_agent: str | None
    at: datetime
    corrections: list[CorrectionRead] = []


class ChangeRecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    journal_index: int
    table: str
    operation: Literal["insert", "update", "delete"]
    record_id: str
    customer_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed_by: str
    department: str | None
    reason: str | None
    feedback_ref: str | None
    at: datetime
    corrections: list[CorrectionRead] = []


class ReadRecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    journal_index: int
    customer_id: str | None
    what: str
    reader: str
    department: str | None
    at: datetime
    corrections: list[CorrectionRead] = []
