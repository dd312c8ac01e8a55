"""Login records: a view of the journal's login entries (SPEC B5)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, Column, Index, Integer, Text
from sqlmodel import Field

from casebridge_shared.db import UTCDateTime
from customer_ledger.db import Base


class LoginRecord(Base, table=True):
    __tablename__ = "login_records"
    __table_args__ = (
        Index("ix_login_records_user_at", "user_id", "at"),
        Index("ix_login_records_at", "at"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    user_id: str | None = Field(default=None, max_length=36)
    email: str = Field(max_length=320)
    outcome: str = Field(max_length=16)  # success | failure
    reason: str | None = Field(default=None, max_length=64)
    client_ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(sa_type=UTCDateTime)
    # Where the record is in the journal: the proof that it was not altered.
    journal_index: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), nullable=False))


class LoginRecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: str | None
    email: str
    outcome: Literal["success", "failure"]
    reason: str | None
    client_ip: str | None
    user_agent: str | None
    at: datetime
    journal_index: int
