"""case-handling settings (env ``CASEBRIDGE_CASE_HANDLING_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from casebridge_shared.settings import ServiceSettings
from casebridge_shared.uploads import DEFAULT_UPLOAD_TYPES

# The same list order-intake accepts for customers' files (casebridge_shared.uploads).
DEFAULT_ATTACHMENT_TYPES = DEFAULT_UPLOAD_TYPES


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "case-handling"
    default_port: ClassVar[int] = 8002

    # The worker serves its own /metrics here.
    worker_metrics_port: int = Field(default=9002, ge=0, le=65535)
    # Attachments: where the files live, how large, which media types.
    attachment_dir: Path | None = Field(
        default=None,
        description="where uploaded files are stored (default: <var_dir>/case-handling/attachments)",
    )
    attachment_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    attachment_allowed_types: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTACHMENT_TYPES))

    @property
    def attachment_path(self) -> Path:
        return (self.attachment_dir or self.var_dir / "case-handling" / "attachments").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
