"""One settings object per service, read from the environment.

Every service reads ``CASEBRIDGE_<SERVICE>_<FIELD>`` first and falls back to
``CASEBRIDGE_<FIELD>``. That way ``make up`` (all processes share one
environment) can give each service its own port and database, while values
that are the same everywhere (the broker address, the environment name) are
set once.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from casebridge_shared.events import DEFAULT_DATASCHEMA_BASE

COMMON_PREFIX = "CASEBRIDGE_"

# Values shipped in code for local use only; a non-development environment must
# replace every one of them (full-stack-fastapi-template's "changethis" rule).
DEVELOPMENT_ONLY_SECRETS = frozenset({"changethis", "casebridge-dev-only"})
# What case-handling and order-intake share for service tokens when none is set, in
# development and tests only (order-intake's ``service_client_secret``, issue 26).
DEVELOPMENT_SERVICE_CLIENT_SECRET = "casebridge-dev-only"  # noqa: S105 (refused outside development/test)


# Signature algorithms a provider's tokens may use: asymmetric, so a public key verifies them.
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set ``service_name`` and a port."""

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8000

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    environment: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = 0
    log_level: str = "INFO"
    log_json: bool = True
    var_dir: Path = Path("var")
    database_url: str = ""
    # Public base URL of this service, used in links and as the token audience.
    public_url: str = ""
    # Every event's CloudEvents ``dataschema`` is this plus ``<event type>.json``: the
    # published schema of its type (docs/events/schemas). Point it at where the schemas
    # are served to make the URIs resolvable; the default is a stable name only.
    event_schema_base_url: str = DEFAULT_DATASCHEMA_BASE

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # Tansu (the embedded broker) does not implement InitProducerId, so the
    # idempotent producer is a setting: on for Apache Kafka, off for Tansu.
    kafka_enable_idempotence: bool = False
    kafka_topic_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_request_timeout_ms: int = Field(default=10_000, ge=100)
    # How long the broker may hold a consumer's fetch when there is nothing new.
    # The embedded broker answers a fetch only when this runs out, not when data
    # arrives, so it bounds how late a consumer sees an event (aiokafka's default,
    # 500 ms, delayed every case by up to that; see ADR-0013).
    kafka_fetch_max_wait_ms: int = Field(default=25, ge=1, le=10_000)
    # Whether the services create missing topics (auto) or only use topics an operator
    # provisioned (never): then a missing topic, or one of ours with another partition
    # count than kafka_topic_partitions, stops the worker at startup (docs/configuration.md).
    kafka_topic_creation: Literal["auto", "never"] = "auto"
    # How every Kafka client (producers, consumers, admin) talks to the brokers: TLS
    # (SSL, SASL_SSL) and SASL (SASL_PLAINTEXT, SASL_SSL). One place turns these into
    # aiokafka's arguments: casebridge_shared.kafka.client_security.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # PEM files. No CA file: the system's trusted CAs. Certificate and key: client
    # authentication by certificate (mutual TLS), both or neither.
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")

    # Token verification. By default tokens come from order-intake; point
    # ``oidc_issuer`` at an OpenID Connect provider to use that instead.
    token_issuer: str = "http://127.0.0.1:8001"  # noqa: S105 (a URL, not a secret)
    token_audience: str = "casebridge"  # noqa: S105
    jwks_url: str = ""
    oidc_issuer: str = ""
    # With ``oidc_issuer``: how the provider's tokens are read (casebridge_shared.oidc,
    # docs/configuration.md "An OpenID Connect provider"). Audience: empty means token_audience
    # (Entra: the app's client id or Application ID URI; Keycloak: the audience mapper's value).
    oidc_audience: str = ""
    # Signature algorithms accepted from the provider (asymmetric only: never "none" or HS*).
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    # Where the provider puts roles or groups: dotted paths into the token, e.g. "realm_access.roles"
    # (Keycloak realm roles), "resource_access.casebridge.roles" (Keycloak client roles), "groups"
    # (Entra group object ids), "roles" (Entra app roles). Names from all of them are collected.
    oidc_roles_claims: list[str] = Field(default_factory=lambda: ["roles"])
    # Provider role/group name -> Casebridge role(s). Empty: a provider role named like a Casebridge
    # role (staff, admin, ...) is that role. Set: only the names listed here grant anything.
    oidc_role_mapping: dict[str, str | list[str]] = Field(default_factory=dict)
    oidc_subject_claim: str = "sub"
    oidc_email_claim: str = "email"  # Entra: "upn" or "preferred_username"
    oidc_name_claim: str = "name"
    oidc_department_claim: str = "department"
    # Claims that must have exactly this value, e.g. {"tid": "<tenant id>"} for Entra.
    oidc_required_claims: dict[str, str] = Field(default_factory=dict)
    # The provider's discovery document is read again after this long (its jwks_uri may move).
    oidc_discovery_cache_seconds: int = Field(default=3600, ge=0)
    # The issuer's key set is fetched again this often: a withdrawn signing key stops
    # verifying within it, and a token verified with it is remembered at most as long
    # again (so 2 x this bounds its acceptance; ADR-0021).
    jwks_cache_seconds: int = Field(default=60, ge=0)
    # After a refetch, an unknown kid waits this long before the next refetch
    # (so forged kids cannot make us hammer the issuer).
    jwks_refetch_cooldown_seconds: float = Field(default=10, ge=0)
    # Disabled users and revoked sessions (identity_revocations, kept from identity events)
    # are re-read from the database this often; part of the 60 s bound (revocation.py).
    revocation_refresh_seconds: float = Field(default=5, ge=0, le=30)

    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)
    # After SIGTERM the api finishes what it is answering for this long, then cancels what is
    # left: live streams (SSE) never finish by themselves; browsers reconnect with Last-Event-ID.
    shutdown_grace_seconds: int = Field(default=5, ge=1, le=300)
    # At most this many concurrent api requests share one write transaction (group
    # commit, where a service's api uses it: placing orders, the ledger's records).
    group_commit_max_requests: int = Field(default=64, ge=1, le=1000)
    # Browser origins allowed to call this api (CORS), e.g. the staff app's origin on
    # order-intake's token endpoint. Empty: no cross-origin calls.
    cors_allow_origins: list[str] = Field(default_factory=list)
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto
    # are believed. Empty: the peer's address is the client's, whatever the headers say.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Calls to targets users register (webhooks, push endpoints) go to public addresses
    # only; these networks/addresses and host names are allowed as well (on-premises
    # receivers). See casebridge_shared.outbound.
    outbound_allow: list[str] = Field(default_factory=list)
    # The outbox relay of services that publish events. On SQLite the poll interval is how
    # often it looks at the database files for a commit (a lower p99 for a little more
    # CPU per relaying worker; see ADR-0004); PostgreSQL wakes it by NOTIFY.
    relay_batch_size: int = Field(default=1000, ge=1, le=10_000)
    relay_poll_interval_seconds: float = Field(default=0.01, gt=0, le=10)
    # How long rows the broker acknowledged may wait to be marked published, so that the
    # batches of that time share one write transaction (0: marked at once). The rows are
    # left out of the relay's reads meanwhile; after a crash they are sent again and the
    # consumers drop the copies by event id.
    relay_mark_interval_seconds: float = Field(default=0.1, ge=0, le=10)
    outbox_retention_hours: int = Field(default=7 * 24, ge=1)
    # How long a creating POST's Idempotency-Key (and its kept answer) is remembered.
    idempotency_key_hours: int = Field(default=24, ge=1)
    # How often a relay asks the broker whether it still has what it acknowledged (its
    # cluster id, our topics, their partitions' end offsets): one metadata and one
    # ListOffsets request. A broker that lost its data is healed by sending the
    # retained events again (ADR-0026).
    relay_broker_check_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Consumers: how often a failing handler is tried before its event is dead-lettered.
    consumer_max_attempts: int = Field(default=5, ge=1, le=100)
    # Set: ``/metrics`` (the api's and the worker's operations port) answers only requests
    # with ``Authorization: Bearer <token>``, others get 401 problem+json; empty: open, as
    # for ``make up`` on loopback. /healthz and /readyz stay open for probes.
    metrics_token: SecretStr = SecretStr("")

    @classmethod
    def env_prefix_for_service(cls) -> str:
        return f"{COMMON_PREFIX}{cls.service_name.upper().replace('-', '_')}_"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        service_env = EnvSettingsSource(
            settings_cls, env_prefix=cls.env_prefix_for_service(), case_sensitive=False
        )
        common_env = EnvSettingsSource(settings_cls, env_prefix=COMMON_PREFIX, case_sensitive=False)
        return (init_settings, service_env, common_env, file_secret_settings)

    @model_validator(mode="after")
    def _derive_defaults(self) -> Self:
        if self.port == 0:
            self.port = self.default_port
        if not self.database_url:
            path = (self.var_dir / f"{self.service_name}.sqlite3").resolve()
            self.database_url = f"sqlite+aiosqlite:///{path}"
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        return self

    @field_validator("event_schema_base_url")
    @classmethod
    def _schema_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                "event_schema_base_url: an http(s) URL without query or fragment, e.g. "
                f"{DEFAULT_DATASCHEMA_BASE}"
            )
        # The event type is appended: a base without its slash would glue them together.
        return value if value.endswith("/") else f"{value}/"

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or network") from exc
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _allow_list(cls, value: list[str]) -> list[str]:
        from casebridge_shared.outbound import OutboundPolicy  # httpx only where it is used

        try:
            OutboundPolicy(value)
        except ValueError as exc:
            raise ValueError(f"outbound_allow: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _check_oidc(self) -> Self:
        from casebridge_shared.auth import Role

        unsafe = [a for a in self.oidc_algorithms if a not in OIDC_ALGORITHMS]
        if unsafe or not self.oidc_algorithms:
            raise ValueError(
                f"oidc_algorithms: {unsafe or 'empty'} not allowed; choose from {', '.join(OIDC_ALGORITHMS)}"
            )
        for name, targets in self.oidc_role_mapping.items():
            for role in [targets] if isinstance(targets, str) else targets:
                if role not in Role._value2member_map_:
                    raise ValueError(
                        f"oidc_role_mapping: {name!r} maps to {role!r}, which is no Casebridge role "
                        f"({', '.join(r.value for r in Role)})"
                    )
        for path in (*self.oidc_roles_claims, self.oidc_subject_claim):
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"oidc claim path {path!r} is empty or has an empty part")
        return self

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Self:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"kafka_security_protocol={protocol} needs kafka_sasl_username and kafka_sasl_password"
            )
        if not protocol.startswith("SASL_") and (
            self.kafka_sasl_username or self.kafka_sasl_password.get_secret_value()
        ):
            # Credentials meant for the broker would otherwise be left unused without a word.
            raise ValueError(
                f"kafka_sasl_username/kafka_sasl_password are set but kafka_security_protocol={protocol} "
                "does not use SASL (SASL_PLAINTEXT or SASL_SSL)"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together (client certificate)")
        if self.kafka_ssl_key_password is not None and self.kafka_ssl_keyfile is None:
            raise ValueError("kafka_ssl_key_password is set without kafka_ssl_keyfile (the key it opens)")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not protocol.endswith("SSL") and any(f is not None for f in tls_files):
            raise ValueError(
                f"kafka_ssl_* files are set but kafka_security_protocol={protocol} does not use TLS "
                "(SSL or SASL_SSL)"
            )
        return self

    @model_validator(mode="after")
    def _refuse_development_secrets(self) -> Self:
        if self.environment is Environment.DEVELOPMENT or self.environment is Environment.TEST:
            return self
        for name, value in self._secret_values().items():
            if value in DEVELOPMENT_ONLY_SECRETS:
                raise ValueError(
                    f"{name} still has its development default; set a real secret "
                    f"for environment={self.environment.value}"
                )
        return self

    def _secret_values(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for name in type(self).model_fields:
            value: Any = getattr(self, name)
            if isinstance(value, SecretStr):
                values[name] = value.get_secret_value()
        return values

    @property
    def issuer_keys_path(self) -> Path:
        """Where the token issuer's last published public keys are kept (for when it is unreachable)."""
        return (self.var_dir / self.service_name / "issuer-keys.json").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def topic_settings(self) -> dict[str, int]:
        return {
            "partitions": self.kafka_topic_partitions,
            "replication_factor": self.kafka_replication_factor,
        }
