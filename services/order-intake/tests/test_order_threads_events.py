"""Staff replies and customer-visible communications join the order's thread (issue 26), once;
case-handling's service token (client credentials) reads the customer's files and nothing else."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.settings import Environment
from casebridge_shared.testing import count_rows
from order_intake.bootstrap import Container
from order_intake.settings import Settings
from order_intake.threads.models import OrderMessage

from .conftest import Factory
from .test_case_events import Case, consume_until, inbox_count, new_order, publish

PDF = b"%PDF-1.7\n" + b"w" * 1000


async def test_staff_replies_and_visible_communications_join_the_thread_once(
    broker: EmbeddedBroker, container: Container, factory: Factory, client: httpx.AsyncClient
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    order = await new_order(factory)
    case = Case(order)
    opened = case.event("case-opened", "new", product_title="Contract review", product_category="contracts")
    reply = case.event(
        "message-posted",
        "in_progress",
        message_id="reply-1",
        author_id="staff-1",
        author_name="Sam Staff",
        body="We will call you tomorrow.",
    )
    visible = case.event(
        "communication-recorded",
        "in_progress",
        channel="phone",
        direction="outbound",
        occurred_at=case.clock.isoformat(),
        customer_visible_summary="Discussed the deadline.",
    )
    hidden = case.event(
        "communication-recorded",
        "in_progress",
        channel="phone",
        direction="outbound",
        occurred_at=case.clock.isoformat(),
        customer_visible_summary=None,
    )
    # Each twice: the inbox drops the copies, the thread keeps one item per event.
    await publish(broker, opened, reply, visible, hidden, reply, visible)

    async def all_seen() -> bool:
        return await inbox_count(container) >= 4

    await consume_until(container, all_seen)
    assert await count_rows(container.db, OrderMessage) == 2
    customer = await _customer(container, order.customer_id)
    items = (await client.get(f"/orders/{order.id}/messages", headers=factory.auth(customer))).json()["items"]
    assert [(i["author"], i["source"], i["body"], i["author_name"]) for i in items] == [
        ("staff", "message", "We will call you tomorrow.", "Sam Staff"),
        ("staff", "communication", "Discussed the deadline.", None),
    ]


async def _customer(container: Container, user_id: str) -> Any:
    from order_intake.identity.models import User

    async with container.db.session() as s:
        return await s.get(User, user_id)


async def _service_token(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": "case-handling",
        "client_secret": "casebridge-dev-only",
    }
    return await client.post("/auth/token", data=data | form)


async def test_case_handling_takes_a_service_token_that_reads_the_customer_s_files_only(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    auth = factory.auth(customer)
    order = (
        await client.post("/orders", json={"product_id": product.id, "description": "x"}, headers=auth)
    ).json()
    files = [("files", ("a.pdf", PDF, "application/pdf"))]
    [attached] = (await client.post(f"/orders/{order['id']}/files", files=files, headers=auth)).json()[
        "items"
    ]

    r = await _service_token(client)
    assert r.status_code == 200, r.text
    assert r.json()["refresh_token"] is None and r.headers["cache-control"] == "no-store"
    service = {"Authorization": f"Bearer {r.json()['access_token']}"}
    got = await client.get(f"/orders/{order['id']}/files/{attached['id']}", headers=service)
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == attached["sha256"]
    # Nothing else: not the order, not the messages, no writing.
    assert (await client.get(f"/orders/{order['id']}", headers=service)).status_code == 403
    assert (await client.get(f"/orders/{order['id']}/messages", headers=service)).status_code == 403
    assert (
        await client.post(f"/orders/{order['id']}/messages", json={"body": "x"}, headers=service)
    ).status_code == 403

    for form in ({"client_secret": "wrong"}, {"client_id": "notifier"}):
        bad = await _service_token(client, **form)
        assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json", bad.text
    missing = await client.post(
        "/auth/token", data={"grant_type": "client_credentials", "client_id": "case-handling"}
    )
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "body.client_secret"


def test_outside_development_no_secret_means_no_service_token(tmp_path: Any) -> None:
    settings = Settings(
        environment=Environment.STAGING,
        database_url="sqlite+aiosqlite:///x.db",
        var_dir=tmp_path,
        signing_keys_secret="a-real-secret-for-sealing-keys",
        bootstrap_admin_password="Another-Real-Passw0rd!",
    )
    assert settings.service_client_secret_value is None
