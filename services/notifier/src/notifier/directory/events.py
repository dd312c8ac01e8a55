"""The notifier's view of order-intake's identity events (tolerant readers).

The notifier keeps its own directory of people (who is staff, who supervises,
where to email a customer) so that it can alert while order-intake is down.
"""

from __future__ import annotations

from casebridge_shared.events import EventReader, published_by

USER_CREATED = "casebridge.identity.user-created.v1"
USER_UPDATED = "casebridge.identity.user-updated.v1"
ROLES_CHANGED = "casebridge.identity.roles-changed.v1"


class UserSnapshot(EventReader):
    user_id: str
    email: str
    full_name: str = ""
    roles: list[str]
    active: bool
    version: int


PAYLOAD_MODELS: dict[str, type[EventReader]] = {
    USER_CREATED: UserSnapshot,
    USER_UPDATED: UserSnapshot,
    ROLES_CHANGED: UserSnapshot,
}

# Only order-intake publishes identity events (its contract, docs/events); from another source: refused.
SOURCES: dict[str, str] = published_by("order-intake", *PAYLOAD_MODELS)
