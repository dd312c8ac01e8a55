"""Nothing lost when the broker forgets: a stack stopped and started on an empty broker,
and a broker SIGKILLed under load and started again (issue 25, section 1).

Both count, for every order accepted: its case (exactly one), and every case
event in the inboxes of order-intake, the notifier and the customer-ledger.
No operator command is run: the relays notice the broker lost what it had
acknowledged and send it again; the consumers read the new topics from the
start and drop what they had applied.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from casebridge_shared.db import Database
from casebridge_shared.events import CASES_TOPIC, ORDERS_TOPIC
from casebridge_shared.testing import DatabaseTemplates, wait_until

from .conftest import Platform, Stack, ledger_platform, notifier_platform

pytestmark = pytest.mark.slow

CONSUMERS_OF_CASE_EVENTS = {"intake": "order-intake", "notifier": "notifier", "ledger": "customer-ledger"}


@dataclass
class Count:
    orders: int
    without_case: int
    duplicated_cases: int
    case_events: int
    lost: dict[str, int]

    @property
    def whole(self) -> bool:
        return self.without_case == 0 and self.duplicated_cases == 0 and not any(self.lost.values())


async def _rows(platform: Platform, sql: str, **params: Any) -> list[Any]:
    db = Database(platform.settings.database_url)
    try:
        async with db.session() as s:
            return list((await s.execute(text(sql), params)).all())
    finally:
        await db.dispose()


async def _count(stack: Stack, consumers: dict[str, Platform], accepted: set[str]) -> Count:
    cases = await _rows(stack.cases, "SELECT order_id, count(*) FROM cases GROUP BY order_id")
    per_order = {order_id: n for order_id, n in cases}
    events = {
        row[0]
        for table in ("outbox", "outbox_published")
        for row in await _rows(stack.cases, f"SELECT event_id FROM {table} WHERE topic = :t", t=CASES_TOPIC)
    }
    lost: dict[str, int] = {}
    for name, platform in consumers.items():
        applied = {
            row[0]
            for row in await _rows(
                platform,
                "SELECT event_id FROM inbox WHERE consumer_group = :g AND topic = :t",
                g=CONSUMERS_OF_CASE_EVENTS[name],
                t=CASES_TOPIC,
            )
        }
        lost[name] = len(events - applied)
    # The case platform itself: every order event applied (a case for each placed order).
    order_events = {
        row[0]
        for table in ("outbox", "outbox_published")
        for row in await _rows(stack.intake, f"SELECT event_id FROM {table} WHERE topic = :t", t=ORDERS_TOPIC)
    }
    applied_orders = {
        row[0]
        for row in await _rows(
            stack.cases,
            "SELECT event_id FROM inbox WHERE consumer_group = 'case-handling' AND topic = :t",
            t=ORDERS_TOPIC,
        )
    }
    lost["cases"] = len(order_events - applied_orders)
    return Count(
        orders=len(accepted),
        without_case=len(accepted - set(per_order)),
        duplicated_cases=sum(n - 1 for n in per_order.values() if n > 1),
        case_events=len(events),
        lost=lost,
    )


async def _settled(stack: Stack, consumers: dict[str, Platform], accepted: set[str], timeout: float) -> Count:
    last: list[Count] = []

    async def whole() -> bool:
        last[:] = [await _count(stack, consumers, accepted)]
        return last[0].whole and last[0].case_events >= len(accepted)

    try:
        await wait_until(whole, timeout=timeout, interval=0.5, message="every order's case and case events")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last[0] if last else 'no count'}") from None
    return last[0]


class Orders:
    def __init__(self, client: httpx.AsyncClient, product: str) -> None:
        self.client = client
        self.product = product
        self.accepted: set[str] = set()

    async def place(self, i: int) -> None:
        # One Idempotency-Key per order: a client that lost the answer may ask again.
        key = f"order-{i}-{time.monotonic_ns()}"
        for _ in range(20):
            r = await self.client.post(
                "/orders",
                json={"product_id": self.product, "description": f"need {i}"},
                headers={"Idempotency-Key": key},
            )
            if r.status_code != 503:
                break
        assert r.status_code == 201, r.text
        self.accepted.add(str(r.json()["id"]))


async def _customer_orders(stack: Stack) -> Orders:
    product = await stack.product()
    customer = await stack.register_customer("forgetful@example.org")
    return Orders(customer, product)


async def test_a_stack_stopped_at_once_comes_back_on_an_empty_broker_and_loses_nothing(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    async with (
        notifier_platform(stack, db_templates, tmp_path) as notifier,
        ledger_platform(stack, db_templates, tmp_path) as ledger,
    ):
        consumers = {"intake": stack.intake, "notifier": notifier, "ledger": ledger}
        orders = await _customer_orders(stack)
        gate = asyncio.Semaphore(50)

        async def place(i: int) -> None:
            async with gate:
                await orders.place(i)

        await asyncio.gather(*(place(i) for i in range(200)))
        # Everything stops at once, as Ctrl-C stops `make up`, with events still on their way;
        # the broker keeps nothing.
        everyone = [stack.cases, notifier, ledger, stack.intake]
        await asyncio.gather(*(p.stop() for p in everyone))
        stack.broker.stop()
        stack.broker.start()
        await stack.intake.start()  # first: it issues the tokens the others verify
        await asyncio.gather(*(p.start() for p in everyone[:-1]))
        count = await _settled(stack, consumers, orders.accepted, timeout=180)
    assert count.orders == 200
    print(f"stopped at once and started on an empty broker: {count}")


async def test_a_broker_killed_under_load_comes_back_empty_and_nothing_is_lost(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    async with (
        notifier_platform(stack, db_templates, tmp_path) as notifier,
        ledger_platform(stack, db_templates, tmp_path) as ledger,
    ):
        consumers = {"intake": stack.intake, "notifier": notifier, "ledger": ledger}
        orders = await _customer_orders(stack)
        rate = 30.0
        started = time.monotonic()
        pending: list[asyncio.Task[None]] = []
        for i in range(300):
            # An order every 1/30 s, each on its own: a slow answer does not slow the rate.
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            pending.append(asyncio.create_task(orders.place(i)))
            if i == 150:
                stack.broker.kill()  # SIGKILL: what it held is gone
            if i == 180:
                stack.broker.start()  # the same port, empty, a new cluster id
        await asyncio.gather(*pending)
        count = await _settled(stack, consumers, orders.accepted, timeout=180)
    assert count.orders == 300
    print(f"broker killed at order 150 and started again at 180: {count}")
