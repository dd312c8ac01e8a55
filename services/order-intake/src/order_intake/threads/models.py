"""Messages on an order, the customer's files and read receipts (issue 26 section 1)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field

from casebridge_shared.db import UTCDateTime, new_id, utcnow
from order_intake.db import Base

Author = Literal["customer", "staff"]
Source = Literal["message", "communication"]
ReceiptItem = Literal["solution", "document"]

MESSAGE_MAX_CHARS = 5000


class OrderMessage(Base, table=True):
    """One item of the order's thread: the customer's message, a staff reply, or a
    customer-visible communication staff recorded on the case."""

    __tablename__ = "order_messages"
    __table_args__ = (
        Index("ix_order_messages_order_at", "order_id", "at"),
        # A retried post with the same Idempotency-Key finds the first message.
        UniqueConstraint("order_id", "author_id", "idempotency_key", name="uq_order_messages_idempotency"),
    )

    # Ours for the customer's messages; case-handling's message id for staff replies (so
    # the same reply delivered twice is one row even without the inbox).
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    order_id: str = Field(sa_column=Column(String(36), ForeignKey("orders.id"), nullable=False))
    author: str = Field(max_length=16)
    author_id: str | None = Field(default=None, max_length=100)
    author_name: str | None = Field(default=None, max_length=200)
    body: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(default="message", max_length=16)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)


class OrderFile(Base, table=True):
    """A file the customer attached to their order; case-handling fetches a copy."""

    __tablename__ = "order_files"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    order_id: str = Field(sa_column=Column(String(36), ForeignKey("orders.id"), nullable=False, index=True))
    file_name: str = Field(max_length=255)
    media_type: str = Field(max_length=127)
    size: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), nullable=False))
    sha256: str = Field(max_length=64)
    storage_key: str = Field(max_length=300)
    uploaded_by: str = Field(max_length=100)
    uploaded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReadReceipt(Base, table=True):
    """When the customer first opened the solution or a document (later reads change nothing)."""

    __tablename__ = "read_receipts"
    __table_args__ = (UniqueConstraint("order_id", "item", "document_id", name="uq_read_receipts_item"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    order_id: str = Field(sa_column=Column(String(36), ForeignKey("orders.id"), nullable=False, index=True))
    item: str = Field(max_length=16)
    # "" for the solution: a NULL would make the unique constraint let duplicates through.
    document_id: str = Field(default="", max_length=36)
    read_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- API shapes -----------------------------------------------------------------


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = PydanticField(min_length=1, max_length=MESSAGE_MAX_CHARS, description="1 to 5000 characters")

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        trimmed = value.strip()
        if not trimmed:
            raise ValueError("the message is empty")
        return trimmed


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    author: Author
    author_name: str | None
    body: str
    at: datetime
    source: Source


class MessageList(BaseModel):
    items: list[MessageRead]


class FileRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    file_name: str
    media_type: str
    size: int
    sha256: str
    uploaded_at: datetime


class FileList(BaseModel):
    items: list[FileRead]


class ReceiptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: ReceiptItem
    document_id: str | None = PydanticField(default=None, min_length=1, max_length=36)
