"""notifier settings (env ``CASEBRIDGE_NOTIFIER_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from casebridge_shared.outbound import OutboundPolicy
from casebridge_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "notifier"
    default_port: ClassVar[int] = 8003

    # The worker serves its own /metrics here.
    worker_metrics_port: int = Field(default=9003, ge=0, le=65535)

    # Live stream: on SQLite, how often each api process looks at the database's
    # files for a commit (a stat; it queries, once for all its connections, when they
    # changed). PostgreSQL tells it by NOTIFY. And the keep-alive comment.
    stream_poll_seconds: float = Field(default=0.01, gt=0, le=5)
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)

    # Deliveries (push, email, webhooks).
    # How often the dispatcher looks for deliveries due without being told: retries
    # coming due. New deliveries this process queues wake it at once.
    delivery_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    delivery_backoff_seconds: float = Field(default=2.0, gt=0)
    delivery_max_backoff_seconds: float = Field(default=600.0, gt=0)
    delivery_concurrency: int = Field(default=20, ge=1, le=500)
    webhook_disable_after_failures: int = Field(default=15, ge=1, le=1000)
    # After a webhook's secret is rotated, deliveries carry a signature by the old secret
    # too for this long, so the receiver can switch secrets without losing a message.
    webhook_secret_overlap_seconds: int = Field(default=86400, ge=0, le=30 * 86400)

    # Email (SMTP).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    email_from: str = "Casebridge <notifications@casebridge.example>"
    # Where a customer's email sends them to see their order: <this>/portal/orders/<order id>
    # (the customer portal order-intake serves).
    customer_portal_url: str = "http://127.0.0.1:8001"
    # Where staff open a case: the staff console of case-handling (each alert in the staff app
    # links to <case_handling_public_url>/console/cases/<case_id>).
    case_handling_public_url: str = "http://127.0.0.1:8002"

    # Web Push (VAPID, RFC 8292). The private key is a PEM file kept apart
    # from the database; created on first start if missing.
    vapid_key_file: Path | None = Field(
        default=None, description="default: <var_dir>/notifier/vapid-private-key.pem"
    )
    vapid_subject: str = "mailto:operations@casebridge.example"
    # Webhook secrets are sealed in the database with this key (Fernet), shared by api and worker.
    webhook_secrets_key_file: Path | None = Field(
        default=None, description="default: <var_dir>/notifier/webhook-secrets.key"
    )
    push_ttl_seconds: int = Field(default=3600, ge=0, le=28 * 24 * 3600)

    # Escalation of unclaimed cases (the per-category times are routing rules).
    escalation_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    def outbound_policy(self) -> OutboundPolicy:
        """Which webhook and push targets may be called (``outbound_allow``: on-premises ones)."""
        return OutboundPolicy(self.outbound_allow)

    @property
    def webhook_secrets_key_path(self) -> Path:
        return (self.webhook_secrets_key_file or self.var_dir / "notifier" / "webhook-secrets.key").resolve()

    @property
    def vapid_key_path(self) -> Path:
        return (self.vapid_key_file or self.var_dir / "notifier" / "vapid-private-key.pem").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
