"""Prometheus metrics shared by every service (one process registry)."""

from __future__ import annotations

import hmac

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUEST_SECONDS = Histogram(
    "casebridge_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

RELAY_PUBLISHED = Counter(
    "casebridge_relay_published_total", "Outbox events published to Kafka", ["service", "topic"]
)
RELAY_FAILED = Counter(
    "casebridge_relay_failed_total", "Outbox events whose publish failed (retried)", ["service"]
)
RELAY_BACKLOG = Gauge("casebridge_relay_backlog", "Outbox rows not yet published", ["service"])
RELAY_OLDEST_UNPUBLISHED_SECONDS = Gauge(
    "casebridge_relay_oldest_unpublished_seconds",
    "Age of the oldest unpublished outbox row (relay lag)",
    ["service"],
)
RELAY_COMMIT_TO_PUBLISH_SECONDS = Histogram(
    "casebridge_relay_commit_to_publish_seconds",
    "Time from outbox commit to broker acknowledgement",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0),
)

BROKER_RESETS = Counter(
    "casebridge_broker_resets_total",
    "Times a relay or consumer found the broker without what it had acknowledged (a new "
    "cluster id, a topic gone, a partition ending below the acknowledged offset) and healed",
    ["service", "component"],
)
RELAY_REPUBLISHED = Counter(
    "casebridge_relay_republished_total",
    "Published events queued to be sent again because the broker lost them",
    ["service"],
)
RELAY_HALTED = Gauge(
    "casebridge_relay_halted",
    "1 while the relay publishes nothing because a topic is not as configured (see the log)",
    ["service"],
)

CONSUMER_LAG = Gauge(
    "casebridge_consumer_lag",
    "Messages behind the partition end, per consumer group and partition",
    ["service", "group", "topic", "partition"],
)
CONSUMER_APPLIED = Counter(
    "casebridge_consumer_events_applied_total", "Events applied by a consumer", ["service", "group"]
)
DEAD_LETTERED = Counter(
    "casebridge_dead_lettered_total", "Events sent to a dead-letter topic", ["service", "group"]
)
DOCUMENT_FETCHES = Counter(
    "casebridge_document_fetches_total",
    "Attempts to copy a document from another service, by outcome "
    "(stored, retry, rejected: the bytes did not match the announced SHA-256)",
    ["service", "outcome"],
)
DOCUMENTS_PENDING = Gauge(
    "casebridge_documents_pending", "Documents announced but not yet copied", ["service"]
)
GROUP_COMMIT_REQUESTS = Histogram(
    "casebridge_group_commit_requests",
    "Api requests that shared one committed write transaction (group commit)",
    ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000),
)
GROUP_COMMIT_RETRIED_APART = Counter(
    "casebridge_group_commit_retried_apart_total",
    "Shared transactions rolled back because a request or the commit failed, then run apart",
    ["service"],
)
LOGIN_THROTTLED = Counter(
    "casebridge_login_throttled_total",
    "Login attempts refused with 429 before the password was checked, by what was throttled "
    "(account: too many failures for the email; address: too many from the client address)",
    ["service", "scope"],
)

# How old an event is when a consumer applies it (now minus its CloudEvents ``time``, the
# commit that made it): per consumer group, so each hop of order -> case -> alert shows its
# own delay, relay and broker included (docs/runbooks.md, "Order to alert path").
EVENT_AGE_AT_APPLY_SECONDS = Histogram(
    "casebridge_consumer_event_age_seconds",
    "Age of an event (since its source committed it) when a consumer group applied it",
    ["service", "group"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)

# The notifier's channels (in_app, push, email, webhook) by what each attempt came to:
# delivered; retried (failed, tried again later); failed (failed with no attempt left);
# dead (given up without retrying: the target is gone, the account deactivated, the
# webhook disabled: what was still queued for it). Each attempt counts once, under one outcome.
NOTIFIER_DELIVERIES = Counter(
    "casebridge_notifier_deliveries_total",
    "Notifier deliveries by channel and outcome (delivered, retried, failed, dead)",
    ["service", "channel", "outcome"],
)
NOTIFIER_DELIVERY_ATTEMPT_SECONDS = Histogram(
    "casebridge_notifier_delivery_attempt_seconds",
    "Duration of one push, email or webhook send attempt, by channel and outcome",
    ["service", "channel", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
NOTIFIER_DELIVERY_LATENCY_SECONDS = Histogram(
    "casebridge_notifier_delivery_latency_seconds",
    "Time to delivery by channel: in_app from the event's time to the stored notification; "
    "push, email and webhook from being queued to the attempt that delivered (retries included)",
    ["service", "channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)

LEDGER_CHECKPOINT_AGE_SECONDS = Gauge(
    "casebridge_ledger_checkpoint_age_seconds",
    "Seconds since the latest signed journal checkpoint was issued (0 before the first)",
    ["service"],
)
LEDGER_ENTRIES_UNCHECKPOINTED = Gauge(
    "casebridge_ledger_entries_uncheckpointed",
    "Journal entries appended after the latest signed checkpoint",
    ["service"],
)


def authorized(token: str, authorization: str | None) -> bool:
    """Whether a scrape may read the metrics: no token set, or ``Bearer <token>`` (compared in
    constant time). The metrics name routes, consumer groups and volumes: not for everyone."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
