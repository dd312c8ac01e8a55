"""Push, email and webhooks: delivered for real, retried, recorded, never twice (issue 5, section 2)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from sqlmodel import col, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from casebridge_shared import testing
from casebridge_shared.broker import free_port
from casebridge_shared.events import CloudEvent
from casebridge_shared.testing import ApiServer
from notifier.bootstrap import Container
from notifier.deliveries import service as deliveries
from notifier.deliveries.models import Delivery, DeliveryAttempt, PushSubscription, WebhookSubscription
from notifier.notifications.models import Kind
from notifier.notifications.service import Alert, notify
from notifier.testing import Mailbox, PushService, WebhookReceiver

from .conftest import People


@asynccontextmanager
async def dispatching(container: Container, workers: int = 1) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(container.dispatcher().run(stop)) for _ in range(workers)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


@asynccontextmanager
async def serving(app: object) -> AsyncIterator[ApiServer]:
    server = ApiServer(lambda: app, free_port())  # type: ignore[arg-type,return-value]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def until(condition: Callable[[], Awaitable[bool] | bool], message: str) -> None:
    async def check() -> bool:
        result = condition()
        return bool(await result) if isinstance(result, Awaitable) else bool(result)

    await testing.wait_until(check, timeout=60, message=message)


async def assign(container: Container, person_id: str, key: str | None = None) -> Alert:
    alert = Alert(
        kind=Kind.CASE_ASSIGNED,
        dedupe_key=key or str(uuid.uuid4()),
        case_id=str(uuid.uuid4()),
        order_id=str(uuid.uuid4()),
        title="Assigned to you: Divorce consultation",
        body="Order 1234abcd is now yours.",
        at=datetime.now(UTC),
    )
    async with container.db.write_session() as session:
        await notify(session, [person_id], alert)
        await session.commit()
    return alert


def case_event() -> CloudEvent:
    case_id = str(uuid.uuid4())
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/case-handling",
        type="casebridge.cases.case-opened.v1",
        subject=case_id,
        time=datetime.now(UTC),
        partitionkey=case_id,
        aggregateversion=1,
        data={
            "case_id": case_id,
            "order_id": "o-1",
            "customer_id": "c-1",
            "status": "new",
            "product_title": "X",
        },
    )


async def queue_webhooks(container: Container, event: CloudEvent) -> None:
    async with container.db.write_session() as session:
        await deliveries.queue_webhooks(session, event)
        await session.commit()


async def rows(container: Container) -> list[Delivery]:
    async with container.db.session() as session:
        return list((await session.exec(select(Delivery).order_by(col(Delivery.created_at)))).all())


async def attempts(container: Container, delivery_id: str) -> list[DeliveryAttempt]:
    async with container.db.session() as session:
        found = await session.exec(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)
            .order_by(col(DeliveryAttempt.attempt))
        )
        return list(found.all())


async def test_push_email_and_webhook_arrive_and_can_be_verified(
    client: httpx.AsyncClient, container: Container, people: People, mailbox: Mailbox
) -> None:
    push, hooks = PushService(), WebhookReceiver()
    wanda = await people.add("staff", name="Wanda Weiss")
    admin = people.headers("admin-1", "admin")
    mailbox.start()
    try:
        async with serving(push.app) as push_server, serving(hooks.app) as hook_server:
            phone = push.device(push_server.url, "wanda-phone")
            registered = await client.post(
                "/push-subscriptions", json=phone.subscription(), headers=people.headers(wanda)
            )
            assert registered.status_code == 201
            created = await client.post(
                "/webhooks", json={"url": f"{hook_server.url}/hook", "description": "CRM"}, headers=admin
            )
            assert created.status_code == 201
            secret = created.json()["secret"]
            assert secret.startswith("whsec_")
            async with container.db.session() as s:
                stored = (await s.get(WebhookSubscription, created.json()["id"])).secret  # type: ignore[union-attr]
            assert stored.startswith("fernet:") and secret not in stored  # sealed at rest

            alert = await assign(container, wanda.user_id)
            event = case_event()
            await queue_webhooks(container, event)
            async with dispatching(container):
                await until(
                    lambda: phone.received and mailbox.messages and hooks.received, "all three channels"
                )

        # Web Push: decrypted by the device's own keys.
        [payload] = phone.received
        assert payload["title"] == alert.title and payload["case_id"] == alert.case_id
        assert payload["kind"] == "case_assigned" and payload["seq"] == 1
        # Email.
        [mail] = mailbox.messages
        assert mail["To"] == f"Wanda Weiss <{wanda.email}>" and mail["Subject"] == alert.title
        assert alert.case_id in mail.get_payload(decode=True).decode()
        # Webhook: the verifier we document for integrators accepts it, and refuses a tampered copy.
        [(body, headers)] = hooks.received
        verified = Webhook(secret).verify(body, headers)
        assert verified["id"] == event.id and verified["type"] == event.type
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body.replace(b'"o-1"', b'"o-2"'), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, headers | {"webhook-id": "another"})

        # The admin's delivery history: each sent on the first attempt.
        history = (await client.get("/deliveries", headers=admin)).json()
        assert history["total"] == 3
        assert sorted((d["channel"], d["status"], d["attempts"]) for d in history["items"]) == [
            ("email", "sent", 1),
            ("push", "sent", 1),
            ("webhook", "sent", 1),
        ]
        one = history["items"][0]["id"]
        tried = (await client.get(f"/deliveries/{one}/attempts", headers=admin)).json()
        assert [(a["attempt"], a["status"]) for a in tried] == [(1, "sent")]
        only_push = (await client.get("/deliveries?channel=push", headers=admin)).json()
        assert [d["channel"] for d in only_push["items"]] == ["push"]
    finally:
        mailbox.stop()


async def test_failing_channels_are_retried_and_recorded_without_holding_up_the_others(
    client: httpx.AsyncClient, container: Container, people: People, mailbox: Mailbox
) -> None:
    push, hooks = PushService(), WebhookReceiver()
    wanda = await people.add("staff", name="Wanda")
    async with serving(push.app) as push_server, serving(hooks.app) as hook_server:
        phone = push.device(push_server.url, "phone")
        await client.post("/push-subscriptions", json=phone.subscription(), headers=people.headers(wanda))
        await client.post(
            "/webhooks", json={"url": f"{hook_server.url}/hook"}, headers=people.headers("a", "admin")
        )
        push.answer = 500  # the push service is failing
        # ... and the SMTP server is down (nothing listens on its port yet)
        await assign(container, wanda.user_id)
        await queue_webhooks(container, case_event())

        async with dispatching(container):
            # The webhook goes through while push and email keep failing.
            await until(lambda: hooks.received, "the webhook")

            async def retried() -> bool:
                return all(d.attempts >= 2 for d in await rows(container) if d.channel != "webhook")

            await until(retried, "push and email retried")
            push.answer = 201
            mailbox.start()
            await until(lambda: phone.received and mailbox.messages, "push and email after recovery")
            await until(lambda: _all_sent(container), "every delivery marked sent")
        mailbox.stop()

    for delivery in await rows(container):
        history = await attempts(container, delivery.id)
        outcomes = [a.status for a in history]
        assert outcomes[-1] == "sent" and outcomes.count("sent") == 1, (delivery.channel, outcomes)
        assert [a.attempt for a in history] == list(range(1, len(history) + 1))
        if delivery.channel != "webhook":
            assert "failed" in outcomes and all(a.error for a in history if a.status == "failed")
    assert len(phone.received) == 1 and len(mailbox.messages) == 1 and len(hooks.received) == 1


async def _all_sent(container: Container) -> bool:
    return all(d.status == "sent" for d in await rows(container))


async def test_gone_devices_are_removed_and_hopeless_deliveries_end_as_failed(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    container.settings.delivery_max_attempts = 2
    push = PushService()
    wanda = await people.add("staff")
    async with serving(push.app) as push_server:
        phone = push.device(push_server.url, "old-phone")
        await client.post("/push-subscriptions", json=phone.subscription(), headers=people.headers(wanda))
        del push.devices["old-phone"]  # the browser dropped it: the push service answers 410
        # Email to an address nobody knows (the person is unknown to the directory): tried, then given up.
        async with container.db.write_session() as session:
            deliveries.queue_email(session, "k-1", None, "nobody-we-know", {"subject": "s", "text": "t"})
            await session.commit()
        await assign(container, wanda.user_id)
        async with dispatching(container):
            await until(lambda: _no_pending(container), "every delivery finished")
    by_channel = {d.channel: d for d in await rows(container)}
    assert by_channel["push"].status == "failed" and "410" in (by_channel["push"].last_error or "")
    async with container.db.session() as session:
        assert (await session.exec(select(PushSubscription))).all() == []
    unknown = next(d for d in await rows(container) if d.recipient == "nobody-we-know")
    assert unknown.status == "failed" and unknown.attempts == 2
    assert "no email address" in (unknown.last_error or "")


async def _no_pending(container: Container) -> bool:
    return all(d.status != "pending" for d in await rows(container))


async def test_a_webhook_that_keeps_failing_is_disabled(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    container.settings.webhook_disable_after_failures = 3
    container.settings.delivery_max_attempts = 50
    hooks = WebhookReceiver()
    hooks.answer = 500
    admin = people.headers("a", "admin")
    dead = "casebridge_notifier_deliveries_total"
    dead_before = testing.metric_value(
        (await client.get("/metrics")).text, dead, channel="webhook", outcome="dead"
    )
    async with serving(hooks.app) as hook_server:
        created = (
            await client.post("/webhooks", json={"url": f"{hook_server.url}/hook"}, headers=admin)
        ).json()
        await queue_webhooks(container, case_event())
        await queue_webhooks(container, case_event())
        async with dispatching(container):

            async def disabled() -> bool:
                async with container.db.session() as session:
                    sub = await session.get(WebhookSubscription, created["id"])
                    return sub is not None and not sub.active

            await until(disabled, "the webhook disabled")
            await until(lambda: _no_pending(container), "its deliveries ended")
    shown = (await client.get(f"/webhooks/{created['id']}", headers=admin)).json()
    assert shown["active"] is False and "failed attempts in a row" in shown["disabled_reason"]
    assert all(d.status == "failed" for d in await rows(container))
    # What was still queued for it when it was disabled was given up: dead on /metrics.
    dead_after = testing.metric_value(
        (await client.get("/metrics")).text, dead, channel="webhook", outcome="dead"
    )
    assert dead_after - dead_before >= 1
    # Re-enabled by the admin: a fresh start.
    again = await client.patch(f"/webhooks/{created['id']}", json={"active": True}, headers=admin)
    assert again.json()["active"] is True and again.json()["consecutive_failures"] == 0


async def test_two_dispatchers_send_each_delivery_once(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    hooks = WebhookReceiver()
    async with serving(hooks.app) as hook_server:
        await client.post(
            "/webhooks", json={"url": f"{hook_server.url}/hook"}, headers=people.headers("a", "admin")
        )
        events = [case_event() for _ in range(30)]
        for event in events:
            await queue_webhooks(container, event)
        async with dispatching(container, workers=2):
            await until(lambda: _all_sent(container), "all sent")
    ids = [Webhook.__name__ and h["webhook-id"] for _, h in hooks.received]
    assert len(ids) == 30 and len(set(ids)) == 30


# --- the subscription endpoints' bad input ----------------------------------------------------------


async def test_push_subscription_input_and_ownership(client: httpx.AsyncClient, people: People) -> None:
    me, other = people.headers("s-1", "staff"), people.headers("s-2", "staff")
    good = {"endpoint": "https://push.example/abc", "keys": {"p256dh": "B" * 87, "auth": "a" * 22}}
    for bad, field in (
        ({"endpoint": "not a url", "keys": good["keys"]}, "endpoint"),
        ({"endpoint": good["endpoint"]}, "keys"),
        ({"endpoint": good["endpoint"], "keys": {"p256dh": "short", "auth": "a" * 22}}, "keys.p256dh"),
    ):
        response = await client.post("/push-subscriptions", json=bad, headers=me)
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["field"].endswith(field)
    assert (await client.post("/push-subscriptions", json=good)).status_code == 401
    assert (
        await client.post("/push-subscriptions", json=good, headers=people.headers("c", "customer"))
    ).status_code == 403
    created = await client.post("/push-subscriptions", json=good, headers=me)
    assert created.status_code == 201
    assert (await client.post("/push-subscriptions", json=good, headers=me)).status_code == 200  # same device
    sub_id = created.json()["id"]
    assert [s["id"] for s in (await client.get("/push-subscriptions", headers=me)).json()] == [sub_id]
    assert (await client.get("/push-subscriptions", headers=other)).json() == []
    assert (await client.delete(f"/push-subscriptions/{sub_id}", headers=other)).status_code == 404
    assert (await client.delete(f"/push-subscriptions/{sub_id}", headers=me)).status_code == 204
    key = (await client.get("/push/vapid-public-key")).json()["public_key"]
    assert len(key) == 87  # 65 bytes, base64url without padding


async def test_webhooks_and_delivery_history_are_for_admins(
    client: httpx.AsyncClient, people: People
) -> None:
    admin, staff = people.headers("a", "admin"), people.headers("s", "staff")
    assert (
        await client.post("/webhooks", json={"url": "https://crm.example/hook"}, headers=staff)
    ).status_code == 403
    assert (await client.get("/deliveries", headers=staff)).status_code == 403
    assert (await client.get("/webhooks")).status_code == 401
    bad = await client.post("/webhooks", json={"url": "ftp://crm.example"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.url"
    assert (await client.get("/webhooks/nope", headers=admin)).status_code == 404
    assert (await client.patch("/webhooks/nope", json={"active": False}, headers=admin)).status_code == 404
    assert (await client.get("/deliveries/nope/attempts", headers=admin)).status_code == 404
    assert (await client.get("/deliveries?channel=pigeon", headers=admin)).status_code == 422
    listed = (await client.get("/webhooks", headers=admin)).json()
    assert listed == [] and "secret" not in str(listed)


async def test_a_queued_delivery_wakes_the_dispatcher_instead_of_waiting_for_its_poll(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    container.settings.delivery_poll_seconds = 60  # longer than the wait below: only a wake-up finds it
    looked = 0
    claim_due = deliveries.claim_due

    async def counted(*args: object, **kwargs: object) -> list[Delivery]:
        nonlocal looked
        found = await claim_due(*args, **kwargs)  # type: ignore[arg-type]
        looked += 1
        return found

    monkeypatch.setattr(deliveries, "claim_due", counted)
    async with dispatching(container):
        await until(lambda: looked >= 1, "the dispatcher's first look (nothing due)")
        async with container.db.write_session() as session:
            deliveries.queue_email(session, "k-wake", None, "nobody-we-know", {"subject": "s", "text": "t"})
            await session.rollback()  # rolled back: nothing queued, nobody woken
            deliveries.queue_email(session, "k-wake", None, "nobody-we-know", {"subject": "s", "text": "t"})
            await session.commit()

        async def tried() -> bool:
            return any(d.attempts >= 1 for d in await rows(container))

        await testing.wait_until(tried, timeout=30, message="the queued email tried at once")


# --- SSRF: users' URLs never reach into our own network (issue 25) ---------------------------------

INSIDE = [
    "http://127.0.0.1:8002/cases",
    "http://localhost:8004/customers",
    "http://0.0.0.0:8001/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/hook",
    "http://192.168.1.10/hook",
    "http://[fd12::1]/hook",
    "http://224.0.0.1/hook",
]


async def test_webhooks_and_push_endpoints_inside_our_network_are_refused_at_registration(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    container.settings.outbound_allow = []  # as deployed by default
    admin, me = people.headers("a", "admin"), people.headers("s-1", "staff")
    keys = {"p256dh": "B" * 87, "auth": "a" * 22}
    for url in INSIDE:
        refused = await client.post("/webhooks", json={"url": url}, headers=admin)
        assert refused.status_code == 422, url
        assert refused.headers["content-type"] == "application/problem+json"
        [error] = refused.json()["errors"]
        assert error["field"] == "body.url" and "address" in error["reason"], (url, error)
        https = url.replace("http://", "https://", 1)
        pushed = await client.post("/push-subscriptions", json={"endpoint": https, "keys": keys}, headers=me)
        assert pushed.status_code == 422 and pushed.json()["errors"][0]["field"] == "body.endpoint", https
    # Push endpoints are https only (a public http one too).
    plain = await client.post(
        "/push-subscriptions", json={"endpoint": "http://push.example/x", "keys": keys}, headers=me
    )
    assert plain.status_code == 422 and "https" in plain.json()["errors"][0]["reason"]
    # Nothing half-written.
    assert (await client.get("/webhooks", headers=admin)).json() == []
    assert (await client.get("/push-subscriptions", headers=me)).json() == []
    # Public targets are fine; an operator's allow-list admits an on-premises receiver.
    assert (
        await client.post("/webhooks", json={"url": "https://crm.example/h"}, headers=admin)
    ).status_code == 201
    container.settings.outbound_allow = ["10.0.0.0/24"]
    assert (
        await client.post("/webhooks", json={"url": "http://10.0.0.5/hook"}, headers=admin)
    ).status_code == 201
    assert (
        await client.post("/webhooks", json={"url": "http://10.0.1.5/hook"}, headers=admin)
    ).status_code == 422


async def test_deliveries_check_the_target_again_after_resolving_it(
    client: httpx.AsyncClient, container: Container, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that was public when registered and points at this host when we send (DNS
    rebinding) is refused, as is a registered address the allow-list no longer admits; with the
    allow-list the name's checked address is where the connection goes."""
    container.settings.delivery_max_attempts = 1
    hooks = WebhookReceiver()
    admin = people.headers("a", "admin")
    loop = asyncio.get_running_loop()
    resolve = loop.getaddrinfo

    async def rebinding(host: str, port: int, **kwargs: object) -> object:
        return await resolve("127.0.0.1" if host == "rebind.example" else host, port, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    async with serving(hooks.app) as hook_server:
        port = hook_server.url.rsplit(":", 1)[1]
        by_name = await client.post(
            "/webhooks", json={"url": f"http://rebind.example:{port}/hook"}, headers=admin
        )
        by_address = await client.post("/webhooks", json={"url": f"{hook_server.url}/hook"}, headers=admin)
        assert by_name.status_code == by_address.status_code == 201
        container.settings.outbound_allow = []  # the operator took 127.0.0.1 off the list
        await queue_webhooks(container, case_event())
        async with dispatching(container):
            await until(lambda: _no_pending(container), "both attempts made")
        assert hooks.received == []
        errors = sorted(d.last_error or "" for d in await rows(container))
        assert all("loopback address" in e for e in errors) and len(errors) == 2, errors
        assert any("rebind.example (127.0.0.1)" in e for e in errors), errors

        # Allowed again: the name (unknown to real DNS) is reached at the address we resolved.
        container.settings.outbound_allow = ["127.0.0.1"]
        await client.patch(f"/webhooks/{by_address.json()['id']}", json={"active": False}, headers=admin)
        await queue_webhooks(container, case_event())
        async with dispatching(container):
            await until(lambda: _no_pending(container), "the delivery by name")
        assert len(hooks.received) == 1


async def test_a_push_endpoint_is_checked_again_when_sending(
    client: httpx.AsyncClient, container: Container, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    container.settings.delivery_max_attempts = 1
    push = PushService()
    wanda = await people.add("staff")
    async with serving(push.app) as push_server:
        phone = push.device(push_server.url, "phone")
        registered = await client.post(
            "/push-subscriptions", json=phone.subscription(), headers=people.headers(wanda)
        )
        assert registered.status_code == 201
        container.settings.outbound_allow = []
        await assign(container, wanda.user_id)
        async with dispatching(container):
            await until(lambda: _no_pending(container), "the attempt")
    [delivery] = [d for d in await rows(container) if d.channel == "push"]
    assert delivery.status == "failed" and "only https" in (delivery.last_error or "")
    assert push.requests == 0


async def test_the_push_resolver_answers_only_allowed_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    from casebridge_shared.outbound import OutboundPolicy, OutboundRefused
    from notifier.deliveries.dispatcher import _PolicyResolver

    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(2, 1, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    with pytest.raises(OutboundRefused, match="link-local"):
        await _PolicyResolver(OutboundPolicy()).resolve("push.example", 443)
    [answer] = await _PolicyResolver(OutboundPolicy(["169.254.0.0/16"])).resolve("push.example", 443)
    assert answer["host"] == "169.254.169.254" and answer["hostname"] == "push.example"


async def test_the_dispatcher_rides_out_a_database_refusing_connections(container: Container) -> None:
    """Issue 25: the database away (connections terminated, new ones refused) never ends the loop."""
    if container.db.dialect != "postgresql":
        pytest.skip("refuses PostgreSQL connections (run with CASEBRIDGE_TEST_POSTGRES_URL)")
    dispatcher = container.dispatcher()
    passes: dict[str, int] = {"failed": 0, "done": 0}
    send_due = dispatcher.send_due

    async def counted(now: datetime | None = None) -> int:
        try:
            sent = await send_due(now)
        except Exception:
            passes["failed"] += 1
            raise
        passes["done"] += 1
        return sent

    dispatcher.send_due = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    async with testing.connections_refused(container.db.url):
        await testing.terminate_connections(container.db.url)
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            await testing.wait_until(lambda: passes["failed"] >= 3, timeout=30, message="failed passes")
            assert not task.done() and passes["done"] == 0
        except BaseException:
            stop.set()
            raise
    try:
        await testing.wait_until(lambda: passes["done"] >= 1, timeout=30, message="a pass once it is back")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
