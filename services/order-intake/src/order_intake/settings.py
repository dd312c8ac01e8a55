"""order-intake settings (env ``CASEBRIDGE_ORDER_INTAKE_*``, falling back to ``CASEBRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Self

from pydantic import EmailStr, Field, SecretStr, model_validator

from casebridge_shared.settings import (
    DEVELOPMENT_ONLY_SECRETS,
    DEVELOPMENT_SERVICE_CLIENT_SECRET,
    Environment,
    ServiceSettings,
)
from casebridge_shared.storage import ObjectStorageSettings
from casebridge_shared.uploads import DEFAULT_UPLOAD_MAX_BYTES, DEFAULT_UPLOAD_TYPES
from order_intake.identity.passwords import password_problem


# Users' files: local directories (below) or S3 (ObjectStorageSettings: storage_backend, s3_*).
class Settings(ServiceSettings, ObjectStorageSettings):
    service_name: ClassVar[str] = "order-intake"
    default_port: ClassVar[int] = 8001

    bootstrap_admin_email: EmailStr = "admin@casebridge.example"
    bootstrap_admin_password: SecretStr = SecretStr("changethis")
    # Short access tokens (each service verifies them alone) renewed with a refresh token that
    # is rotated on every use (RFC 9700); disabling a user or revoking sessions also reaches
    # the services within 60 s through identity events (casebridge_shared.revocation).
    access_token_minutes: int = Field(default=5, ge=1, le=24 * 60)
    refresh_token_days: float = Field(default=14, gt=0, le=90)
    # Machine clients (client credentials grant) get short tokens and no refresh token: they ask again.
    client_token_minutes: int = Field(default=5, ge=1, le=60)
    # Retired signing keys stay in the JWKS this long, so tokens they signed
    # keep verifying until they expire.
    signing_key_grace_minutes: int = Field(default=24 * 60, ge=1)
    signing_key_reload_seconds: float = Field(default=60, ge=0)
    # The signing private keys are sealed in the database (Fernet) with a key derived from
    # this secret, or from the content of this file. Outside development/test one of them
    # is required; in development/test a key file under var_dir is created (mode 0600).
    signing_keys_secret: SecretStr | None = None
    signing_keys_secret_file: Path | None = None

    # Login throttling (identity/throttle.py, ADR-0008): after
    # this many failed logins within the window, an account (email) or a client address
    # is refused with 429 for login_block_seconds, doubling with each further failure up
    # to login_block_max_seconds. A successful login resets the account's count.
    login_failures_per_account: int = Field(default=5, ge=1, le=1000)
    login_failures_per_address: int = Field(default=30, ge=1, le=100_000)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)
    login_block_seconds: int = Field(default=30, ge=1)
    login_block_max_seconds: int = Field(default=5 * 60, ge=1)

    # Password reset by email (identity/service.py, ADR-0032): the
    # link points at <portal_url>/portal/reset-password and works once, for this long.
    portal_url: str = Field(
        default="http://127.0.0.1:8001", description="the customer portal's public base URL, no trailing /"
    )
    password_reset_minutes: int = Field(default=30, ge=5, le=24 * 60)
    # Email (SMTP) that order-intake sends itself (password-reset links). The defaults reach
    # the development mail catcher that `make up` starts (mails kept under var/mail/).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False  # STARTTLS after connecting (submission port 587)
    smtp_tls: bool = False  # TLS from the first byte (port 465); not together with smtp_starttls
    smtp_timeout_seconds: float = Field(default=30, gt=0, le=300)
    email_from: str = "Casebridge <no-reply@casebridge.example>"

    # The live order page (GET /orders/{id}/stream, orders/live.py): on SQLite, how often each api
    # process looks at the database's files for a commit (a stat, no query); a comment line
    # keeps proxies from closing a quiet stream.
    stream_poll_seconds: float = Field(default=0.02, gt=0, le=5)
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)

    # The worker serves its own /metrics (relay counters live in that process).
    worker_metrics_port: int = Field(default=9001, ge=0, le=65535)

    # Solution documents: fetched from case-handling, kept here so the customer
    # can download them while case-handling is down.
    case_handling_url: str = "http://127.0.0.1:8002"
    document_dir: Path | None = Field(
        default=None,
        description="where fetched documents are stored (default: <var_dir>/order-intake/documents)",
    )
    document_fetch_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    document_fetch_timeout_seconds: float = Field(default=30, gt=0)
    # Backoff between attempts doubles from the first value up to the cap; a
    # document is retried until it arrives (case-handling may be down for hours).
    document_fetch_backoff_seconds: float = Field(default=1, gt=0)
    document_fetch_max_backoff_seconds: float = Field(default=300, gt=0)
    service_token_minutes: int = Field(default=5, ge=1, le=60)

    # The customer's files on an order (issue 26): the same limits as staff uploads in
    # case-handling (casebridge_shared.uploads), kept here until case-handling fetches them.
    customer_file_dir: Path | None = Field(
        default=None,
        description="where customers' order files are kept (default: <var_dir>/order-intake/customer-files)",
    )
    customer_file_max_bytes: int = Field(default=DEFAULT_UPLOAD_MAX_BYTES, ge=1024)
    customer_file_allowed_types: list[str] = Field(default_factory=lambda: list(DEFAULT_UPLOAD_TYPES))
    customer_files_per_upload: int = Field(default=10, ge=1, le=100)
    # case-handling takes a service token with it (client_credentials) to fetch those files;
    # env CASEBRIDGE_SERVICE_CLIENT_SECRET sets it for both services. Unset outside
    # development/test: no service token is issued and the files stay here.
    service_client_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Self:
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("smtp_tls and smtp_starttls exclude each other: choose one")
        return self

    @model_validator(mode="after")
    def _real_admin_password(self) -> Self:
        """Outside development and tests the first admin's password meets the password policy."""
        password = self.bootstrap_admin_password.get_secret_value()
        if self.environment in (Environment.DEVELOPMENT, Environment.TEST):
            return self
        if password in DEVELOPMENT_ONLY_SECRETS:
            return self  # refused by ServiceSettings, with its own message
        problem = password_problem(password)
        if problem is not None:
            raise ValueError(f"bootstrap_admin_password: {problem}")
        return self

    @model_validator(mode="after")
    def _require_signing_keys_secret(self) -> Self:
        if self.environment in (Environment.DEVELOPMENT, Environment.TEST):
            return self
        if self.signing_keys_secret is None and self.signing_keys_secret_file is None:
            raise ValueError(
                "signing_keys_secret or signing_keys_secret_file is required for "
                f"environment={self.environment.value}: the token signing keys are sealed with it"
            )
        return self

    @property
    def signing_keys_key_path(self) -> Path:
        """Development/test only: the key file that seals the signing keys when no secret is set."""
        return (self.var_dir / "order-intake" / "signing-keys.key").resolve()

    @property
    def service_client_secret_value(self) -> str | None:
        if self.service_client_secret is not None:
            return self.service_client_secret.get_secret_value()
        if self.environment in (Environment.DEVELOPMENT, Environment.TEST):
            return DEVELOPMENT_SERVICE_CLIENT_SECRET
        return None

    @property
    def customer_file_path(self) -> Path:
        return (self.customer_file_dir or self.var_dir / "order-intake" / "customer-files").resolve()

    @property
    def document_path(self) -> Path:
        return (self.document_dir or self.var_dir / "order-intake" / "documents").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
