"""A customer's copy of a case document, and how its fetch from case-handling is going."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field

from casebridge_shared.db import StrEnumType, UTCDateTime, utcnow
from order_intake.db import Base


class DocumentStatus(StrEnum):
    PENDING = "pending"  # announced by case-handling, not yet here
    AVAILABLE = "available"  # fetched, hash checked, ready to download
    REJECTED = "rejected"  # what arrived did not match the announced SHA-256; never stored


class Document(Base, table=True):
    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_due", "status", "next_attempt_at"),)

    # The attachment id case-handling gave it: one copy per document, however
    # often the event is delivered.
    id: str = Field(primary_key=True, max_length=36)
    order_id: str = Field(sa_column=Column(String(36), ForeignKey("orders.id"), nullable=False, index=True))
    case_id: str = Field(max_length=36)
    file_name: str = Field(max_length=255)
    media_type: str = Field(max_length=255)
    size: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), nullable=False))
    sha256: str = Field(max_length=64)
    status: DocumentStatus = Field(
        default=DocumentStatus.PENDING, sa_column=Column(StrEnumType(DocumentStatus, 16), nullable=False)
    )
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    added_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    available_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    order_id: str
    file_name: str
    media_type: str
    size: int
    sha256: str
    status: DocumentStatus
    added_at: datetime
    available_at: datetime | None
