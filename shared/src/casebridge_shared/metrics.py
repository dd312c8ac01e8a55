"""Prometheus metrics shared by every service (one process registry)."""

from __future__ import annotations

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
