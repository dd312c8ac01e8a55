"""order-intake settings (env ``CASEBRIDGE_ORDER_INTAKE_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from pydantic import EmailStr, Field, SecretStr

from casebridge_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "order-intake"
    default_port: ClassVar[int] = 8001

    bootstrap_admin_email: EmailStr = "admin@casebridge.example"
    bootstrap_admin_password: SecretStr = SecretStr("changethis")
    access_token_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Retired signing keys stay in the JWKS this long, so tokens they signed
    # keep verifying until they expire.
    signing_key_grace_minutes: int = Field(default=24 * 60, ge=1)
    signing_key_reload_seconds: float = Field(default=60, ge=0)

    relay_batch_size: int = Field(default=1000, ge=1, le=10_000)
    relay_poll_interval_seconds: float = Field(default=0.02, gt=0, le=10)
    outbox_retention_hours: int = Field(default=7 * 24, ge=1)
    idempotency_key_hours: int = Field(default=24, ge=1)
    # The worker serves its own /metrics (relay counters live in that process).
    worker_metrics_port: int = Field(default=9001, ge=0, le=65535)


@lru_cache
def get_settings() -> Settings:
    return Settings()
