"""Orders and cases feed the records: a customer and a demand per order, progress per case step (B4, B6)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.events import CASES_TOPIC, ORDERS_TOPIC, CloudEvent
from casebridge_shared.inbox import list_dead_letters
from casebridge_shared.testing import TokenMinter, count_rows
from customer_ledger.bootstrap import CONSUMER_GROUP, Container
from customer_ledger.customers.models import Association, Customer, Demand, ProgressEntry
from customer_ledger.db import inbox


def event(kind: str, key: str, aggregate_version: int, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake" if kind.startswith("orders.") else "/casebridge/case-handling",
        type=f"casebridge.{kind}.v1",
        time=datetime.now(UTC),
        partitionkey=key,
        aggregateversion=aggregate_version,
        data=data,
    )


def order(kind: str, order_id: str, customer_id: str, version: int, **changes: Any) -> CloudEvent:
    now = datetime.now(UTC).isoformat()
    data = {
        "order_id": order_id,
        "customer": {
            "customer_id": customer_id,
            "full_name": "Ada Lovelace",
            "email": "ada@example.org",
            "phone": None,
        },
        "product": {
            "product_id": "p-1",
            "title": "Trademark registration",
            "description": "d",
            "deliverables": ["filing"],
            "category": "ip",
            "price": "490.00",
            "currency": "EUR",
            "version": 1,
        },
        "description": "Register ADA in the EU",
        "status": "submitted",
        "version": version,
        "created_at": now,
        "updated_at": now,
        **changes,
    }
    return event(f"orders.{kind}", order_id, version, data)


def case(kind: str, order_id: str, customer_id: str, **extra: Any) -> CloudEvent:
    data = {
        "case_id": f"case-{order_id}",
        "order_id": order_id,
        "customer_id": customer_id,
        "status": "open",
        "at": datetime.now(UTC).isoformat(),
        **extra,
    }
    return event(f"cases.{kind}", f"case-{order_id}", 1, data)


async def publish(broker: EmbeddedBroker, topic: str, *events: CloudEvent | bytes) -> None:
    await testing.publish(broker.bootstrap_servers, topic, *events, key="k")


async def consume_until_applied(container: Container, applied: int, dead: int = 0) -> None:
    async def done() -> bool:
        letters = await list_dead_letters(container.db, inbox, CONSUMER_GROUP)
        return await count_rows(container.db, inbox.inbox) >= applied and len(letters) >= dead

    await testing.consume_until(container.consumer, done, message="ledger consumer progress")


async def test_orders_and_cases_become_customers_demands_and_progress_once(
    broker: EmbeddedBroker, container: Container, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    ada, bo = "cust-ada", "cust-bo"
    orders = [
        order("order-placed", "o-1", ada, 1),
        order("order-placed", "o-2", ada, 1, description="A second need"),
        order("order-updated", "o-1", ada, 2, description="Register ADA in the EU and UK"),
        order("order-updated", "o-1", ada, 1, description="stale"),  # older than what we have
        order("order-cancelled", "o-2", ada, 2, status="cancelled", reason="changed mind", cancelled_by=ada),
        order("order-placed", "o-3", bo, 1),
    ]
    cases = [
        case("case-opened", "o-1", ada, product_category="ip", product_title="Trademark registration"),
        case("case-assigned", "o-1", ada, status="in_progress", assignee_id="s-1", assignee_name="Sam"),
        case(
            "solution-proposed", "o-1", ada, status="solution_proposed", solution_summary="File in EU and UK"
        ),
    ]
    await publish(broker, ORDERS_TOPIC, *orders, b"{broken")
    await publish(broker, CASES_TOPIC, *cases, event("cases.case-opened", "c-9", 1, {"case_id": "c-9"}))
    await consume_until_applied(container, len(orders) + len(cases), dead=2)
    assert len(await list_dead_letters(container.db, inbox, CONSUMER_GROUP)) == 2

    async with container.db.session() as s:
        customers = {c.id: c for c in (await s.execute(select(Customer))).scalars()}
        demands = {d.order_id: d for d in (await s.execute(select(Demand))).scalars()}
        associations = {
            (a.customer_id, a.department) for a in (await s.execute(select(Association))).scalars()
        }
        progress = (await s.execute(select(ProgressEntry).order_by(ProgressEntry.at))).scalars().all()
    assert set(customers) == {ada, bo} and customers[ada].stage == "sales"  # the default department
    assert associations == {(ada, "sales"), (bo, "sales")}
    assert demands["o-1"].description == "Register ADA in the EU and UK" and demands["o-1"].order_version == 2
    assert demands["o-2"].status == "withdrawn" and demands["o-3"].status == "open"
    assert [p.stage for p in progress] == ["case opened", "case assigned", "solution proposed"]
    assert all(p.project == "o-1" and p.customer_id == ada for p in progress)
    assert "File in EU and UK" in (progress[-1].note or "")

    # Redelivered from the start: nothing recorded twice.
    for topic in (ORDERS_TOPIC, CASES_TOPIC):
        await testing.reset_group_offsets(broker.bootstrap_servers, CONSUMER_GROUP, topic)
    await publish(broker, CASES_TOPIC, case("case-closed", "o-1", ada, status="closed"))
    await consume_until_applied(container, len(orders) + len(cases) + 1)
    assert await count_rows(container.db, Customer) == 2 and await count_rows(container.db, Demand) == 3
    assert await count_rows(container.db, ProgressEntry) == 4

    # The customer sees their own progress only once admin has granted it (B6).
    mine = minter.headers(ada, "customer")
    theirs = minter.headers(bo, "customer")
    admin = minter.headers("admin-1", "admin")
    assert (await api.get("/me/progress", headers=mine)).status_code == 403
    r = await api.post("/grants", json={"customer_id": ada, "table": "progress"}, headers=admin)
    assert r.status_code == 201, r.text
    r = await api.get("/me/progress", headers=mine)
    assert r.status_code == 200 and [p["stage"] for p in r.json()][-1] == "case closed"
    assert {p["customer_id"] for p in r.json()} == {ada}
    assert (await api.get("/me/progress", headers=theirs)).status_code == 403
    r = await api.post("/grants", json={"all_customers": True, "table": "progress"}, headers=admin)
    assert r.status_code == 201
    r = await api.get("/me/progress", headers=theirs)
    assert r.status_code == 200 and r.json() == []  # their own (none yet), never Ada's
    assert (await api.get("/me/progress", headers=minter.headers("s-1", "staff"))).status_code == 403
    assert (await api.get(f"/customers/{ada}", headers=mine)).status_code == 403
    r = await api.get("/audit/reads", params={"customer_id": ada, "what": "progress"}, headers=admin)
    assert {i["reader"] for i in r.json()["items"]} == {ada}
