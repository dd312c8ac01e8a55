"""Managing webhooks (issue 27, section 6): secret rotation with an overlap, update with If-Match,
delete, manual redelivery of a failed delivery, and the event types a webhook may subscribe to."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.db import utcnow
from casebridge_shared.events import ORDERS_TOPIC, CloudEvent
from casebridge_shared.inbox import list_dead_letters
from notifier.bootstrap import CONSUMER_GROUP, Container
from notifier.db import inbox
from notifier.deliveries.events import ORDER_EVENTS
from notifier.deliveries.models import Delivery, DeliveryRedelivery, WebhookSubscription
from notifier.notifications.events import ALL_CASE_EVENTS, CUSTOMER_MESSAGE
from notifier.testing import WebhookReceiver

from .conftest import CaseEvents, People, consume_until, publish
from .test_deliveries import attempts, case_event, dispatching, queue_webhooks, rows, serving, until


async def _webhook(
    client: httpx.AsyncClient, admin: dict[str, str], url: str, **extra: object
) -> httpx.Response:
    created = await client.post("/webhooks", json={"url": url, **extra}, headers=admin)
    assert created.status_code == 201, created.text
    return created


async def test_a_rotated_secret_signs_alongside_the_old_one_until_the_overlap_ends(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    admin = people.headers("a", "admin")
    hooks = WebhookReceiver()
    async with serving(hooks.app) as hook_server:
        created = await _webhook(client, admin, f"{hook_server.url}/hook")
        old, hook_id = created.json()["secret"], created.json()["id"]
        assert created.headers["etag"] == '"1"'

        rotated = await client.post(f"/webhooks/{hook_id}/rotate-secret", headers=admin)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_") and new != old
        assert rotated.headers["etag"] == '"2"' and rotated.json()["version"] == 2
        expires = rotated.json()["previous_secret_expires_at"]
        assert expires is not None
        # The secret is shown once: never in a read.
        shown = await client.get(f"/webhooks/{hook_id}", headers=admin)
        assert "secret" not in shown.json() and new not in shown.text and old not in shown.text

        # During the overlap: two signatures, and a receiver holding either secret verifies.
        await queue_webhooks(container, case_event())
        async with dispatching(container):
            await until(lambda: len(hooks.received) == 1, "the delivery in the overlap")
        body, headers = hooks.received[0]
        assert len(headers["webhook-signature"].split(" ")) == 2
        Webhook(old).verify(body, headers)
        Webhook(new).verify(body, headers)

        # After the overlap: only the new secret signs.
        async with container.db.write_session() as session:
            await session.execute(
                update(WebhookSubscription)
                .where(col(WebhookSubscription.id) == hook_id)
                .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        await queue_webhooks(container, case_event())
        async with dispatching(container):
            await until(lambda: len(hooks.received) == 2, "the delivery after the overlap")
    body, headers = hooks.received[1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


async def test_without_an_overlap_the_old_secret_stops_at_once(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    container.settings.webhook_secret_overlap_seconds = 0
    admin = people.headers("a", "admin")
    hooks = WebhookReceiver()
    async with serving(hooks.app) as hook_server:
        created = await _webhook(client, admin, f"{hook_server.url}/hook")
        rotated = await client.post(f"/webhooks/{created.json()['id']}/rotate-secret", headers=admin)
        assert rotated.json()["previous_secret_expires_at"] is None
        await queue_webhooks(container, case_event())
        async with dispatching(container):
            await until(lambda: hooks.received, "the delivery")
    [(body, headers)] = hooks.received
    Webhook(rotated.json()["secret"]).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(created.json()["secret"]).verify(body, headers)


async def test_rotation_and_delete_refuse_bad_requests(client: httpx.AsyncClient, people: People) -> None:
    admin, staff = people.headers("a", "admin"), people.headers("s", "staff")
    hook_id = (await _webhook(client, admin, "https://crm.example/hook")).json()["id"]
    assert (await client.post(f"/webhooks/{hook_id}/rotate-secret")).status_code == 401
    assert (await client.post(f"/webhooks/{hook_id}/rotate-secret", headers=staff)).status_code == 403
    missing = await client.post("/webhooks/nope/rotate-secret", headers=admin)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    stale = await client.post(f"/webhooks/{hook_id}/rotate-secret", headers=admin | {"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["errors"][0]["field"] == "header.If-Match"
    assert (await client.delete(f"/webhooks/{hook_id}")).status_code == 401
    assert (await client.delete(f"/webhooks/{hook_id}", headers=staff)).status_code == 403
    assert (await client.delete("/webhooks/nope", headers=admin)).status_code == 404
    assert (
        await client.delete(f"/webhooks/{hook_id}", headers=admin | {"If-Match": '"2"'})
    ).status_code == 412
    assert (await client.get(f"/webhooks/{hook_id}", headers=admin)).status_code == 200


async def test_an_update_changes_what_is_sent_and_where_checked_by_if_match(
    client: httpx.AsyncClient, people: People
) -> None:
    admin = people.headers("a", "admin")
    hook_id = (await _webhook(client, admin, "https://crm.example/hook")).json()["id"]
    read = await client.get(f"/webhooks/{hook_id}", headers=admin)
    assert read.headers["etag"] == '"1"'

    changed = await client.patch(
        f"/webhooks/{hook_id}",
        json={
            "url": "https://crm.example/v2/hook",
            "event_types": [CUSTOMER_MESSAGE, CUSTOMER_MESSAGE],
            "description": "CRM v2",
            "active": False,
        },
        headers=admin | {"If-Match": read.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == '"2"'
    body = changed.json()
    assert body["url"] == "https://crm.example/v2/hook" and body["event_types"] == [CUSTOMER_MESSAGE]
    assert body["description"] == "CRM v2" and body["active"] is False and body["version"] == 2

    # Made from the first read, since changed: refused, nothing overwritten.
    stale = await client.patch(
        f"/webhooks/{hook_id}", json={"description": "old"}, headers=admin | {"If-Match": '"1"'}
    )
    assert stale.status_code == 412 and stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["errors"][0]["field"] == "header.If-Match"
    assert (await client.get(f"/webhooks/{hook_id}", headers=admin)).json()["description"] == "CRM v2"
    garbage = await client.patch(
        f"/webhooks/{hook_id}", json={"active": True}, headers=admin | {"If-Match": "x"}
    )
    assert garbage.status_code == 412
    # Two changes from the same read at once: one is made, the other refused.
    racing = await asyncio.gather(
        *(
            client.patch(f"/webhooks/{hook_id}", json={"description": d}, headers=admin | {"If-Match": '"2"'})
            for d in ("left", "right")
        )
    )
    assert sorted(r.status_code for r in racing) == [200, 412], [r.text for r in racing]
    won = next(r for r in racing if r.status_code == 200)
    after = (await client.get(f"/webhooks/{hook_id}", headers=admin)).json()
    assert after["description"] == won.json()["description"] and after["version"] == 3
    # `*`: whatever version it is at.
    anyway = await client.patch(
        f"/webhooks/{hook_id}", json={"active": True}, headers=admin | {"If-Match": "*"}
    )
    assert anyway.status_code == 200 and anyway.json()["version"] == 4


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"event_types": ["casebridge.cases.case-opened.v1", "casebridge.cases.nonsense.v1"]},
            "body.event_types.1",
        ),
        ({"url": "http://10.0.0.5/hook"}, "body.url"),
        ({"url": "ftp://crm.example/hook"}, "body.url"),
        ({"description": "x" * 501}, "body.description"),
        ({"secret": "whsec_mine"}, "body.secret"),
    ],
)
async def test_an_update_refuses_bad_input_naming_the_field(
    client: httpx.AsyncClient, people: People, change: dict[str, object], field: str
) -> None:
    admin = people.headers("a", "admin")
    hook_id = (await _webhook(client, admin, "https://crm.example/hook")).json()["id"]
    refused = await client.patch(f"/webhooks/{hook_id}", json=change, headers=admin)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in refused.json()["errors"]]
    assert (await client.get(f"/webhooks/{hook_id}", headers=admin)).json()["version"] == 1


async def test_only_known_event_types_can_be_subscribed_to(client: httpx.AsyncClient, people: People) -> None:
    admin, staff = people.headers("a", "admin"), people.headers("s", "staff")
    listed = await client.get("/webhooks/event-types", headers=admin)
    assert listed.status_code == 200
    types = [t["type"] for t in listed.json()]
    assert set(ALL_CASE_EVENTS) <= set(types) and CUSTOMER_MESSAGE in types
    assert set(ORDER_EVENTS) <= set(types)
    assert all(t["topic"] for t in listed.json())
    assert (await client.get("/webhooks/event-types", headers=staff)).status_code == 403
    refused = await client.post(
        "/webhooks", json={"url": "https://crm.example/h", "event_types": ["case-opened"]}, headers=admin
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "body.event_types.0"
    assert (await client.get("/webhooks", headers=admin)).json() == []
    await _webhook(client, admin, "https://crm.example/h", event_types=types)


async def test_deleting_a_webhook_cancels_what_waits_for_it_and_keeps_the_history(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    admin = people.headers("a", "admin")
    hooks = WebhookReceiver()
    async with serving(hooks.app) as hook_server:
        created = await _webhook(client, admin, f"{hook_server.url}/hook")
        hook_id = created.json()["id"]
        await queue_webhooks(container, case_event())
        async with dispatching(container):
            await until(lambda: hooks.received, "the first delivery")
        await queue_webhooks(container, case_event())  # still waiting when deleted
        deleted = await client.delete(f"/webhooks/{hook_id}", headers=admin | {"If-Match": '"1"'})
        assert deleted.status_code == 204
    assert len(hooks.received) == 1
    assert (await client.get(f"/webhooks/{hook_id}", headers=admin)).status_code == 404
    assert (await client.delete(f"/webhooks/{hook_id}", headers=admin)).status_code == 404
    history = sorted((d.status, d.last_error) for d in await rows(container))
    assert history == [("failed", "cancelled: the webhook was deleted"), ("sent", None)]
    listed = (await client.get(f"/deliveries?recipient={hook_id}", headers=admin)).json()
    assert listed["total"] == 2
    # A cancelled delivery cannot be sent again: there is nowhere to send it.
    cancelled = next(d for d in await rows(container) if d.status == "failed")
    again = await client.post(f"/deliveries/{cancelled.id}/redeliver", headers=admin)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"


async def test_a_failed_delivery_is_sent_again_on_request_and_who_asked_is_recorded(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    container.settings.delivery_max_attempts = 1
    admin = people.headers("admin-7", "admin")
    hooks = WebhookReceiver()
    hooks.answer = 503
    async with serving(hooks.app) as hook_server:
        created = await _webhook(client, admin, f"{hook_server.url}/hook")
        event = case_event()
        await queue_webhooks(container, event)
        async with dispatching(container):

            async def failed() -> bool:
                return [d.status for d in await rows(container)] == ["failed"]

            await until(failed, "the delivery failed")
        [delivery] = await rows(container)

        # Failed: queued again, due now; then pending (409) and, once sent, sent (409).
        hooks.answer = 200
        # Two admins at once (a double click): it is queued once, the other is told 409.
        both = await asyncio.gather(
            *(client.post(f"/deliveries/{delivery.id}/redeliver", headers=admin) for _ in range(2))
        )
        assert sorted(r.status_code for r in both) == [202, 409], [r.text for r in both]
        asked = next(r for r in both if r.status_code == 202)
        assert asked.json()["status"] == "pending" and asked.json()["id"] == delivery.id
        twice = await client.post(f"/deliveries/{delivery.id}/redeliver", headers=admin)
        assert twice.status_code == 409 and twice.json()["status_now"] == "pending"
        async with dispatching(container):

            async def sent() -> bool:
                return [d.status for d in await rows(container)] == ["sent"]

            await until(sent, "the delivery sent again")
    assert [a.status for a in await attempts(container, delivery.id)] == ["failed", "sent"]
    [(body, headers)] = hooks.received
    assert headers["webhook-id"] == delivery.id  # the same id: a receiver dedupes
    assert Webhook(created.json()["secret"]).verify(body, headers)["id"] == event.id
    done = await client.post(f"/deliveries/{delivery.id}/redeliver", headers=admin)
    assert done.status_code == 409 and done.json()["status_now"] == "sent"

    audit = await client.get(f"/deliveries/{delivery.id}/redeliveries", headers=admin)
    [entry] = audit.json()
    assert entry["requested_by"] == "admin-7" and entry["previous_status"] == "failed"
    assert "503" in entry["previous_error"]
    async with container.db.session() as session:
        assert len((await session.exec(select(DeliveryRedelivery))).all()) == 1


async def test_redelivery_refuses_bad_requests(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    admin, staff = people.headers("a", "admin"), people.headers("s", "staff")
    hook_id = (await _webhook(client, admin, "https://crm.example/hook")).json()["id"]
    await queue_webhooks(container, case_event())
    [delivery] = await rows(container)
    assert (await client.post(f"/deliveries/{delivery.id}/redeliver")).status_code == 401
    assert (await client.post(f"/deliveries/{delivery.id}/redeliver", headers=staff)).status_code == 403
    missing = await client.post("/deliveries/nope/redeliver", headers=admin)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert (await client.get("/deliveries/nope/redeliveries", headers=admin)).status_code == 404
    pending = await client.post(f"/deliveries/{delivery.id}/redeliver", headers=admin)
    assert pending.status_code == 409 and pending.json()["errors"][0]["field"] == "status"
    # Failed, but its webhook is disabled: enable it first.
    async with container.db.write_session() as session:
        await session.execute(
            update(Delivery).where(col(Delivery.id) == delivery.id).values(status="failed", last_error="x")
        )
        await session.commit()
    await client.patch(f"/webhooks/{hook_id}", json={"active": False}, headers=admin)
    disabled = await client.post(f"/deliveries/{delivery.id}/redeliver", headers=admin)
    assert disabled.status_code == 409 and disabled.json()["errors"][0]["field"] == "recipient"
    assert (await client.get(f"/deliveries/{delivery.id}/redeliveries", headers=admin)).json() == []


def order_event(kind: str = "order-placed", source: str = "/casebridge/order-intake") -> CloudEvent:
    order_id = str(uuid.uuid4())
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=source,
        type=f"casebridge.orders.{kind}.v1",
        subject=order_id,
        time=datetime.now(UTC),
        partitionkey=order_id,
        aggregateversion=1,
        data={
            "order_id": order_id,
            "customer": {"customer_id": "c-1", "full_name": "Carl", "email": "carl@example.com"},
            "product": {"title": "Divorce consultation", "category": "family-law"},
            "description": "Help",
            "status": "submitted",
            "version": 1,
            "updated_at": datetime.now(UTC).isoformat(),
        },
    )


async def test_order_events_reach_only_the_webhooks_that_name_them(
    broker: EmbeddedBroker, client: httpx.AsyncClient, container: Container, people: People
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    admin = people.headers("a", "admin")
    hooks = WebhookReceiver()
    async with serving(hooks.app) as hook_server:
        orders = await _webhook(
            client, admin, f"{hook_server.url}/hook", event_types=["casebridge.orders.order-placed.v1"]
        )
        every_case_event = (await _webhook(client, admin, "https://crm.example/cases")).json()["id"]
        placed, forged, opened = (
            order_event(),
            order_event(source="/casebridge/case-handling"),
            CaseEvents().opened(),
        )
        await testing.publish(broker.bootstrap_servers, ORDERS_TOPIC, placed, forged)
        await publish(broker, opened)

        async def handled() -> bool:
            recipients = {(d.recipient, d.dedupe_key) for d in await rows(container)}
            letters = await list_dead_letters(container.db, inbox, group=CONSUMER_GROUP)
            return (
                (orders.json()["id"], placed.id) in recipients
                and (every_case_event, opened.id) in recipients
                and any(letter["event_id"] == forged.id for letter in letters)
            )

        await consume_until(container, handled)
        # A webhook that names no types gets every case event, but no order event (those carry
        # the customer's personal data); the forged one (not from order-intake) went nowhere.
        sent_to = sorted((d.recipient, d.dedupe_key, d.case_id) for d in await rows(container))
        assert sent_to == sorted(
            [(orders.json()["id"], placed.id, None), (every_case_event, opened.id, opened.subject)]
        )
        async with dispatching(container):
            await until(lambda: hooks.received, "the order event at the webhook")
    [(body, headers)] = hooks.received
    verified = Webhook(orders.json()["secret"]).verify(body, headers)
    assert (
        verified["type"] == "casebridge.orders.order-placed.v1"
        and verified["data"]["order_id"] == placed.subject
    )


def thread_event(kind: str, order_id: str, **data: object) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake",
        type=f"casebridge.orders.{kind}.v1",
        subject=order_id,
        time=datetime.now(UTC),
        partitionkey=order_id,
        aggregateversion=1,
        data={"order_id": order_id, "customer_id": "c-1", "at": datetime.now(UTC).isoformat(), **data},
    )


async def test_order_thread_messages_and_read_receipts_reach_the_webhooks_that_name_them(
    broker: EmbeddedBroker, client: httpx.AsyncClient, container: Container, people: People
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    admin = people.headers("a", "admin")
    types = await client.get("/webhooks/event-types", headers=admin)
    offered = {t["type"]: t["topic"] for t in types.json()}
    assert offered["casebridge.orders.message-posted.v1"] == ORDERS_TOPIC
    assert offered["casebridge.orders.read-receipt.v1"] == ORDERS_TOPIC
    hooks = WebhookReceiver()
    async with serving(hooks.app) as hook_server:
        thread = await _webhook(
            client,
            admin,
            f"{hook_server.url}/hook",
            event_types=["casebridge.orders.message-posted.v1", "casebridge.orders.read-receipt.v1"],
        )
        # Messages carry what the customer wrote: not to a webhook that names no types.
        every_case_event = (await _webhook(client, admin, "https://crm.example/cases")).json()["id"]
        order_id = str(uuid.uuid4())
        message = thread_event(
            "message-posted", order_id, message_id="m-1", author_name="Carl", body="Is there news?"
        )
        now = datetime.now(UTC).isoformat()
        receipt = thread_event("read-receipt", order_id, item="solution", document_id=None, read_at=now)
        await testing.publish(broker.bootstrap_servers, ORDERS_TOPIC, message, receipt)

        async def handled() -> bool:
            return {message.id, receipt.id} <= {d.dedupe_key for d in await rows(container)}

        await consume_until(container, handled)
        sent_to = sorted((d.recipient, d.dedupe_key, d.case_id) for d in await rows(container))
        hook_id = thread.json()["id"]
        assert sent_to == sorted([(hook_id, message.id, None), (hook_id, receipt.id, None)])
        assert every_case_event not in {recipient for recipient, _, _ in sent_to}
        async with dispatching(container):
            await until(lambda: len(hooks.received) == 2, "the thread events at the webhook")
    verified = [Webhook(thread.json()["secret"]).verify(body, headers) for body, headers in hooks.received]
    by_type = {v["type"]: v for v in verified}
    posted = by_type["casebridge.orders.message-posted.v1"]
    assert posted["subject"] == order_id and posted["data"]["body"] == "Is there news?"
    assert posted["data"]["message_id"] == "m-1"
    read = by_type["casebridge.orders.read-receipt.v1"]
    assert read["data"]["item"] == "solution" and read["data"]["order_id"] == order_id


async def test_a_thread_event_type_is_checked_like_the_others(
    client: httpx.AsyncClient, people: People
) -> None:
    admin = people.headers("a", "admin")
    bad = await client.post(
        "/webhooks",
        json={"url": "https://crm.example/hook", "event_types": ["casebridge.orders.message-posted.v2"]},
        headers=admin,
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "body.event_types.0"
