"""case-handling settings (env ``CASEBRIDGE_CASE_HANDLING_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr

from casebridge_shared.settings import DEVELOPMENT_SERVICE_CLIENT_SECRET, Environment, ServiceSettings
from casebridge_shared.storage import ObjectStorageSettings
from casebridge_shared.uploads import DEFAULT_UPLOAD_TYPES

# The same list order-intake accepts for customers' files (casebridge_shared.uploads).
DEFAULT_ATTACHMENT_TYPES = DEFAULT_UPLOAD_TYPES


class StaffTeam(BaseModel):
    members: list[str] = Field(default_factory=list, max_length=1000)
    categories: list[str] = Field(default_factory=list, max_length=1000)


# Users' files: local directories (below) or S3 (ObjectStorageSettings: storage_backend, s3_*).
class Settings(ServiceSettings, ObjectStorageSettings):
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
    # The queue's "overdue" filter (docs/case-handling.md, "Service level"): an open case
    # without its own due date is due this many working days (Monday to Friday, UTC) after
    # it was opened; a due date set on the case wins.
    sla_working_days: int = Field(default=2, ge=1, le=60)
    # The queue's "my team" filter: team name -> its members (staff ids or e-mail addresses)
    # and the product categories it handles. Teams are configuration here, as the
    # notifier's routing rules are there: neither service asks the other.
    teams: dict[str, StaffTeam] = Field(default_factory=dict)
    # Live queue (GET /cases/stream): on SQLite, how often each api process looks at the
    # database's files for a commit by the worker; a comment keeps proxies from closing it.
    stream_poll_seconds: float = Field(default=0.05, gt=0, le=5)
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)

    # The customer's files on their order (issue 26): fetched from order-intake with a service
    # token taken there (OAuth2 client credentials, client id "case-handling"); env
    # CASEBRIDGE_SERVICE_CLIENT_SECRET sets the secret for both services. Retried with
    # exponential backoff for as long as order-intake is down.
    order_intake_url: str = "http://127.0.0.1:8001"
    service_client_secret: SecretStr | None = None
    customer_file_fetch_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    customer_file_fetch_timeout_seconds: float = Field(default=30, gt=0)
    customer_file_fetch_backoff_seconds: float = Field(default=1, gt=0)
    customer_file_fetch_max_backoff_seconds: float = Field(default=300, gt=0)

    @property
    def service_client_secret_value(self) -> str | None:
        if self.service_client_secret is not None:
            return self.service_client_secret.get_secret_value()
        if self.environment in (Environment.DEVELOPMENT, Environment.TEST):
            return DEVELOPMENT_SERVICE_CLIENT_SECRET
        return None

    @property
    def attachment_path(self) -> Path:
        return (self.attachment_dir or self.var_dir / "case-handling" / "attachments").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
