"""customer-ledger settings (env ``CASEBRIDGE_CUSTOMER_LEDGER_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from pydantic import Field

from casebridge_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "customer-ledger"
    default_port: ClassVar[int] = 8004

    # The worker (when it exists) serves its own /metrics here.
    worker_metrics_port: int = Field(default=9004, ge=0, le=65535)


@lru_cache
def get_settings() -> Settings:
    return Settings()
