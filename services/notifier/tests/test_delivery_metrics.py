"""Delivery counters and latencies by channel and outcome, read from /metrics after real
deliveries (issue 27, section 5): in-app, Web Push, email and webhooks."""

from __future__ import annotations

import httpx

from casebridge_shared import testing
from notifier.bootstrap import Container
from notifier.testing import Mailbox, PushService, WebhookReceiver

from .conftest import People
from .test_deliveries import (
    _no_pending,
    assign,
    case_event,
    dispatching,
    queue_webhooks,
    rows,
    serving,
    until,
)

CHANNELS = ("in_app", "push", "email", "webhook")
OUTCOMES = ("delivered", "retried", "failed", "dead")


async def _counts(client: httpx.AsyncClient) -> dict[str, float]:
    """Every channel's outcomes, its delivered latencies and its attempts' durations, as now on /metrics."""
    text = (await client.get("/metrics")).text
    counts = {
        f"{channel}/{outcome}": testing.metric_value(
            text, "casebridge_notifier_deliveries_total", service="notifier", channel=channel, outcome=outcome
        )
        for channel in CHANNELS
        for outcome in OUTCOMES
    }
    for channel in CHANNELS:
        counts[f"{channel}/latency"] = testing.metric_value(
            text, "casebridge_notifier_delivery_latency_seconds_count", service="notifier", channel=channel
        )
        counts[f"{channel}/attempt"] = testing.metric_value(
            text, "casebridge_notifier_delivery_attempt_seconds_count", service="notifier", channel=channel
        )
    return counts


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


async def test_every_channel_and_outcome_is_counted_with_its_latency(
    client: httpx.AsyncClient, container: Container, people: People, mailbox: Mailbox
) -> None:
    container.settings.delivery_max_attempts = 2
    push, hooks = PushService(), WebhookReceiver()
    wanda = await people.add("staff", name="Wanda Weiss")
    before = await _counts(client)
    async with serving(push.app) as push_server, serving(hooks.app) as hook_server:
        phone = push.device(push_server.url, "phone")
        old_phone = push.device(push_server.url, "old-phone")
        for device in (phone, old_phone):
            added = await client.post(
                "/push-subscriptions", json=device.subscription(), headers=people.headers(wanda)
            )
            assert added.status_code == 201
        created = await client.post(
            "/webhooks", json={"url": f"{hook_server.url}/hook"}, headers=people.headers("a", "admin")
        )
        assert created.status_code == 201
        del push.devices["old-phone"]  # the browser dropped it: answered 410 once the service is back
        push.answer = 500  # the push service fails, and no SMTP server listens yet

        # First alert: in-app stored, the webhook delivered; push (to both phones) and email fail
        # twice each and are given up.
        await assign(container, wanda.user_id)
        await queue_webhooks(container, case_event())
        async with dispatching(container):
            await until(lambda: hooks.received, "the webhook")
            await until(lambda: _no_pending(container), "push and email given up")
        first = _delta(before, await _counts(client))
        assert first == {
            "in_app/delivered": 1,
            "in_app/latency": 1,
            "webhook/delivered": 1,
            "webhook/latency": 1,
            "webhook/attempt": 1,
            "push/retried": 2,
            "push/failed": 2,
            "push/attempt": 4,
            "email/retried": 1,
            "email/failed": 1,
            "email/attempt": 2,
        }, first

        # Second alert, everything back: push and email delivered at the first attempt; the
        # dropped phone's push is gone (410), given up without a retry.
        push.answer = 201
        mailbox.start()
        try:
            await assign(container, wanda.user_id)
            async with dispatching(container):
                await until(lambda: phone.received and mailbox.messages, "push and email")
                await until(lambda: _no_pending(container), "every delivery finished")
        finally:
            mailbox.stop()
    second = _delta(before, await _counts(client))
    assert second == first | {
        "in_app/delivered": 2,
        "in_app/latency": 2,
        "push/delivered": 1,
        "push/dead": 1,
        "push/latency": 1,
        "push/attempt": 6,
        "email/delivered": 1,
        "email/latency": 1,
        "email/attempt": 3,
    }, second
    # The counters agree with the delivery records the admin reads.
    statuses = sorted((d.channel, d.status) for d in await rows(container))
    assert statuses == [
        ("email", "failed"),
        ("email", "sent"),
        ("push", "failed"),
        ("push", "failed"),
        ("push", "failed"),
        ("push", "sent"),
        ("webhook", "sent"),
    ]
