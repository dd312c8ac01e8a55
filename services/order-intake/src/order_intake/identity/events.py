"""Identity events on ``casebridge.identity.v1`` (the ledger records them as logins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from casebridge_shared.classification import INTERNAL, PERSONAL, PSEUDONYMOUS
from casebridge_shared.events import IDENTITY_TOPIC, EventPayload


class _IdentityEvent(EventPayload):
    topic = IDENTITY_TOPIC


class UserSnapshot(_IdentityEvent):
    user_id: Annotated[str, PSEUDONYMOUS]
    email: Annotated[str, PERSONAL]
    full_name: Annotated[str, PERSONAL]
    phone: Annotated[str | None, PERSONAL]
    roles: Annotated[list[str], INTERNAL]
    department: Annotated[str | None, INTERNAL]
    active: Annotated[bool, INTERNAL]
    version: Annotated[int, INTERNAL]


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
    sessions_not_before: Annotated[datetime | None, INTERNAL]


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
    user_id: Annotated[str, PSEUDONYMOUS]
    email: Annotated[str, PERSONAL]
    roles: Annotated[list[str], INTERNAL]
    department: Annotated[str | None, INTERNAL]
    client_ip: Annotated[str | None, PERSONAL]
    user_agent: Annotated[str | None, PERSONAL]
    at: Annotated[datetime, INTERNAL]


class LoginFailed(_IdentityEvent):
    event_type = "casebridge.identity.login-failed.v1"
    summary = "A token request was refused (the password is never included)."
    user_id: Annotated[str | None, PSEUDONYMOUS]
    email: Annotated[str, PERSONAL]
    reason: Annotated[str, INTERNAL]
    client_ip: Annotated[str | None, PERSONAL]
    user_agent: Annotated[str | None, PERSONAL]
    at: Annotated[datetime, INTERNAL]


class MachineClientSnapshot(_IdentityEvent):
    # user_id, active, sessions_not_before and version are what every service's revocation list
    # reads (casebridge_shared.revocation.AccessChanged): the client's id is its tokens' subject.
    user_id: Annotated[str, INTERNAL]
    client_id: Annotated[str, INTERNAL]
    roles: Annotated[list[str], INTERNAL]
    active: Annotated[bool, INTERNAL]
    sessions_not_before: Annotated[datetime | None, INTERNAL]
    version: Annotated[int, INTERNAL]


class MachineClientCreated(MachineClientSnapshot):
    event_type = "casebridge.identity.machine-client-created.v1"
    summary = "An admin created a machine client (client credentials grant); the secret is never included."


class MachineClientSecretRotated(MachineClientSnapshot):
    event_type = "casebridge.identity.machine-client-secret-rotated.v1"
    summary = "An admin gave a machine client a new secret: the old one no longer gets tokens."


class MachineClientDisabled(MachineClientSnapshot):
    event_type = "casebridge.identity.machine-client-disabled.v1"
    summary = "An admin disabled a machine client: every service refuses its tokens (within 60 s)."
