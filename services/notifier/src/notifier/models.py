"""Every table of notifier, imported so the metadata is complete (migrations, tests)."""

from notifier.db import inbox, metadata, outbox
from notifier.deliveries.models import Delivery, DeliveryAttempt, PushSubscription, WebhookSubscription
from notifier.directory.models import Person
from notifier.escalation.models import ClaimTimer
from notifier.memo import AudienceVersion
from notifier.notifications.models import Notification
from notifier.preferences.models import Preference
from notifier.routing.models import RoutingRule, Team, TeamMember

__all__ = [
    "AudienceVersion",
    "ClaimTimer",
    "Delivery",
    "DeliveryAttempt",
    "Notification",
    "Person",
    "Preference",
    "PushSubscription",
    "RoutingRule",
    "Team",
    "TeamMember",
    "WebhookSubscription",
    "inbox",
    "metadata",
    "outbox",
]
