"""customer-ledger's view of order-intake's identity events (tolerant readers)."""

from __future__ import annotations

from datetime import datetime

from casebridge_shared.events import EventReader, published_by

USER_CREATED = "casebridge.identity.user-created.v1"
USER_UPDATED = "casebridge.identity.user-updated.v1"
ROLES_CHANGED = "casebridge.identity.roles-changed.v1"
LOGIN_SUCCEEDED = "casebridge.identity.login-succeeded.v1"
LOGIN_FAILED = "casebridge.identity.login-failed.v1"


class UserSnapshot(EventReader):
    user_id: str
    email: str
    roles: list[str]
    department: str | None = None
    active: bool
    version: int


class LoginSucceeded(EventReader):
    user_id: str
    email: str
    roles: list[str]
    department: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    at: datetime


class LoginFailed(EventReader):
    user_id: str | None = None
    email: str
    reason: str
    client_ip: str | None = None
    user_agent: str | None = None
    at: datetime


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    USER_CREATED: UserSnapshot,
    USER_UPDATED: UserSnapshot,
    ROLES_CHANGED: UserSnapshot,
    LOGIN_SUCCEEDED: LoginSucceeded,
    LOGIN_FAILED: LoginFailed,
}

# Only order-intake publishes identity events (its contract, docs/events); from another source: refused.
SOURCES: dict[str, str] = published_by("order-intake", *PAYLOAD_MODELS)
