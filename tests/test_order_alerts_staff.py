"""An order placed on order-intake reaches the staff at once: live stream, web push, webhook; the
customer is emailed when the solution is ready (issue 5, section 4). Every part is really running."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer, DatabaseTemplates, wait_until
from notifier.testing import Mailbox, PushService, WebhookReceiver

from .conftest import ADMIN, Stack, notifier_knows, notifier_platform
from .test_order_to_case import case_of, place_order


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[ApiServer]:
    server = ApiServer(lambda: app, free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def next_event(lines: AsyncIterator[str], timeout: float = 60) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        fields: dict[str, Any] = {}
        async for line in lines:
            if not line:
                if "data" in fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(read(), timeout=timeout)


@pytest.mark.slow
async def test_an_order_alerts_staff_at_once_and_the_solution_emails_the_customer(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    mailbox, push, hooks = Mailbox(free_port()), PushService(), WebhookReceiver()
    mailbox.start()
    try:
        async with (
            notifier_platform(stack, db_templates, tmp_path, smtp_port=mailbox.port) as alerts,
            serving(push.app) as push_server,
            serving(hooks.app) as hook_server,
        ):
            staff_token = await stack.staff("sam@casebridge.example", "staff")
            product_id = await stack.product()
            staff_alerts = stack.client(alerts, staff_token)
            admin_alerts = stack.client(alerts, await stack.login(*ADMIN))

            await notifier_knows(alerts, "sam@casebridge.example")

            phone = push.device(push_server.url, "sam-phone")
            subscribed = await staff_alerts.post("/push-subscriptions", json=phone.subscription())
            assert subscribed.status_code == 201
            hook = await admin_alerts.post(
                "/webhooks",
                json={"url": f"{hook_server.url}/hook", "event_types": ["casebridge.cases.case-opened.v1"]},
            )
            secret = hook.json()["secret"]

            async with staff_alerts.stream("GET", "/notifications/stream", timeout=120) as live:
                lines = live.aiter_lines()
                customer = await stack.register_customer("ada@example.org")
                order_id = await place_order(customer, product_id)

                event = await next_event(lines)
                assert event["event"] == "notification"
                assert event["data"]["kind"] == "case_opened" and event["data"]["order_id"] == order_id
                assert event["data"]["title"] == "New case: Employment contract review"

            await wait_until(
                lambda: _truthy(phone.received and hooks.received), timeout=60, message="push, hook"
            )
            assert phone.received[0]["order_id"] == order_id
            body, headers = hooks.received[0]
            assert Webhook(secret).verify(body, headers)["data"]["order_id"] == order_id
            with pytest.raises(WebhookVerificationError):
                Webhook(secret).verify(body.replace(order_id.encode(), b"x" * len(order_id)), headers)

            # Sam takes the case and proposes a solution: the customer gets an email.
            staff_cases = stack.client(stack.cases, staff_token)
            case_id = (await case_of(staff_cases, order_id))["id"]
            assert (await staff_cases.post(f"/cases/{case_id}/claim")).status_code == 200
            assert (await staff_cases.post(f"/cases/{case_id}/start")).status_code == 200
            r = await staff_cases.post(
                f"/cases/{case_id}/solution", json={"summary": "The clause is void", "text": "Because ..."}
            )
            assert r.status_code == 200, r.text
            await wait_until(lambda: _truthy(mailbox.messages), timeout=60, message="the customer's email")
            [mail] = mailbox.messages
            assert "ada@example.org" in mail["To"] and mail["Subject"] == "Your legal solution is ready"
            assert f"/portal/orders/{order_id}" in mail.get_payload(decode=True).decode()
            # Sam took it himself: no "assigned to you" for him; the stream shows one notification.
            listed = (await staff_alerts.get("/notifications")).json()
            assert [n["kind"] for n in listed["items"]] == ["case_opened"]
    finally:
        mailbox.stop()


async def _truthy(value: object) -> bool:
    return bool(value)
