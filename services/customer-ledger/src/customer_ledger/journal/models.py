"""The journal's tables: entries, the Merkle tree's perfect subtrees, signed checkpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import BigInteger, Column, Integer, LargeBinary, PrimaryKeyConstraint, String, Text
from sqlmodel import Field

from casebridge_shared.db import UTCDateTime, utcnow
from customer_ledger.db import Base

_BIG = BigInteger().with_variant(Integer, "sqlite")


class JournalEntry(Base, table=True):
    """One appended entry: its canonical JSON (RFC 8785) and RFC 9162 leaf hash."""

    __tablename__ = "journal_entries"

    index: int = Field(sa_column=Column("index", _BIG, primary_key=True, autoincrement=False))
    kind: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    body: str = Field(sa_column=Column(Text, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    appended_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class JournalNode(Base, table=True):
    """The root of a perfect, aligned subtree: 2**level leaves from leaf index * 2**level.

    Stored as each completes, so every proof is O(log n) look-ups.
    """

    __tablename__ = "journal_nodes"
    __table_args__ = (PrimaryKeyConstraint("level", "index", name="pk_journal_nodes"),)

    level: int = Field(sa_column=Column("level", Integer, nullable=False))
    index: int = Field(sa_column=Column("index", _BIG, nullable=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class JournalHead(Base, table=True):
    """The tree size; its one row is locked by every append, so appends form one sequence."""

    __tablename__ = "journal_head"

    id: int = Field(default=1, primary_key=True)
    size: int = Field(sa_column=Column(_BIG, nullable=False, default=0))


class JournalCheckpoint(Base, table=True):
    """A C2SP tlog-checkpoint, signed as a C2SP signed note."""

    __tablename__ = "journal_checkpoints"

    tree_size: int = Field(sa_column=Column(_BIG, primary_key=True, autoincrement=False))
    root_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    issued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- API shapes -----------------------------------------------------------


class EntryRead(BaseModel):
    index: int
    kind: str
    entry: str  # the canonical JSON exactly as hashed
    leaf_hash: str  # base64
    appended_at: datetime


class CheckpointRead(BaseModel):
    tree_size: int
    note: str
    issued_at: datetime


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]


class ConsistencyProof(BaseModel):
    first: int
    second: int
    hashes: list[str]
