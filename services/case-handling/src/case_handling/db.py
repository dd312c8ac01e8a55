"""case-handling's own schema registry: its tables never mix with another service's."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from casebridge_shared.idempotency import idempotency_table
from casebridge_shared.inbox import inbox_tables
from casebridge_shared.outbox import outbox_tables
from casebridge_shared.revocation import revocations_table


class Base(SQLModel, registry=registry()):
    pass


metadata = Base.metadata
outbox = outbox_tables(metadata)
inbox = inbox_tables(metadata)
# The creating POSTs' Idempotency-Keys and their answers (casebridge_shared.idempotency).
idempotent_requests = idempotency_table(metadata)
# Disabled users and revoked sessions, kept from identity events (casebridge_shared.revocation).
revocations = revocations_table(metadata)

MIGRATIONS = Path(__file__).parent / "migrations"
