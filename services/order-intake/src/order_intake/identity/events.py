"""Identity events on ``casebridge.identity.v1`` (the ledger records them as logins)."""

from __future__ import annotations

from datetime import datetime

from casebridge_shared.events import IDENTITY_TOPIC, EventPayload


class _IdentityEvent(EventPayload):
    topic = IDENTITY_TOPIC


class UserSnapshot(_IdentityEvent):
    user_id: str
    email: str
    full_name: str
    phone: str | None
    roles: list[str]
    department: str | None
    active: bool
    version: int


class UserCreated(UserSnapshot):
    event_type = "casebridge.identity.user-created.v1"
    summary = "A customer signed up or an admin created a user."


class UserUpdated(UserSnapshot):
    event_type = "casebridge.identity.user-updated.v1"
    summary = "A user's basic data changed."


class RolesChanged(UserSnapshot):
    event_type = "casebridge.identity.roles-changed.v1"
    summary = "An admin changed a user's roles or department."


class AccessSnapshot(UserSnapshot):
    # Tokens issued (iat) before this are refused by every service.
    sessions_not_before: datetime | None


class UserDisabled(AccessSnapshot):
    event_type = "casebridge.identity.user-disabled.v1"
    summary = "An admin disabled a user: every service refuses their tokens (within 60 s)."


class UserEnabled(AccessSnapshot):
    event_type = "casebridge.identity.user-enabled.v1"
    summary = "An admin enabled a disabled user again (tokens from before stay refused)."


class SessionsRevoked(AccessSnapshot):
    event_type = "casebridge.identity.sessions-revoked.v1"
    summary = (
        "A user's sessions were revoked (by an admin, or by a password change or reset): "
        "tokens issued before sessions_not_before are refused."
    )


class LoginSucceeded(_IdentityEvent):
    event_type = "casebridge.identity.login-succeeded.v1"
    summary = "A user obtained a token."
    user_id: str
    email: str
    roles: list[str]
    department: str | None
    client_ip: str | None
    user_agent: str | None
    at: datetime


class LoginFailed(_IdentityEvent):
    event_type = "casebridge.identity.login-failed.v1"
    summary = "A token request was refused (the password is never included)."
    user_id: str | None
    email: str
    reason: str
    client_ip: str | None
    user_agent: str | None
    at: datetime
