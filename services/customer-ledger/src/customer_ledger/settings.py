"""customer-ledger settings (env ``CASEBRIDGE_CUSTOMER_LEDGER_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from casebridge_shared.auth import Department
from casebridge_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "customer-ledger"
    default_port: ClassVar[int] = 8004

    # The worker serves its own /metrics here.
    worker_metrics_port: int = Field(default=9004, ge=0, le=65535)

    # The journal's checkpoints name their log (C2SP tlog-checkpoint origin) and
    # are signed with an Ed25519 key kept in a file, apart from the database.
    journal_origin: str = Field(default="casebridge.example/customer-ledger", min_length=1, max_length=200)
    journal_key_file: Path | None = Field(
        default=None, description="default: <var_dir>/customer-ledger/journal-signing-key.pem"
    )

    # Checkpoints per batch: after this many new entries, or this long after the last
    # checkpoint if anything was appended since (and on demand, GET /ledger/checkpoint).
    checkpoint_batch_entries: int = Field(default=1000, ge=1)
    checkpoint_batch_seconds: float = Field(default=10.0, gt=0)
    checkpoint_poll_seconds: float = Field(default=0.5, gt=0, le=60)

    # POST /bulk: operations per request (each is a journal entry of its own); 413 beyond.
    bulk_max_operations: int = Field(default=1000, ge=1, le=100_000)

    # Customers first met through an order are held by, and associated with, this department.
    new_customer_department: Department = Department.SALES

    @property
    def journal_key_path(self) -> Path:
        return (
            self.journal_key_file or self.var_dir / "customer-ledger" / "journal-signing-key.pem"
        ).resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
