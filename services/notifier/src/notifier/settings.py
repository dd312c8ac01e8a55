"""notifier settings (env ``CASEBRIDGE_NOTIFIER_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from pydantic import Field

from casebridge_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "notifier"
    default_port: ClassVar[int] = 8003

    # The worker (when it exists) serves its own /metrics here.
    worker_metrics_port: int = Field(default=9003, ge=0, le=65535)


@lru_cache
def get_settings() -> Settings:
    return Settings()
