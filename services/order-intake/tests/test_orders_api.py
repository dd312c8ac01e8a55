"""Orders: placing, the customer's own view, changes, cancellation (A2, A3, A8)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlmodel import col

from casebridge_shared import testing
from casebridge_shared.auth import Department, Role
from order_intake.bootstrap import Container
from order_intake.catalog.models import Product
from order_intake.db import outbox
from order_intake.identity.models import User
from order_intake.orders.models import Order

from .conftest import Factory

PROBLEM = "application/problem+json"


async def _counts(container: Container) -> tuple[int, int]:
    async with container.db.session() as s:
        orders = (await s.execute(select(func.count()).select_from(Order))).scalar_one()
        events = (await s.execute(select(func.count()).select_from(outbox.outbox))).scalar_one()
    return int(orders), int(events)


async def _order_events(container: Container) -> list[dict[str, object]]:
    async with container.db.session() as s:
        rows = (
            await s.execute(
                select(outbox.outbox.c.payload, outbox.outbox.c.message_key, outbox.outbox.c.topic)
                .where(outbox.outbox.c.topic == "casebridge.orders.v1")
                .order_by(outbox.outbox.c.id)
            )
        ).all()
    events = []
    for payload, key, _topic in rows:
        event = json.loads(payload)
        assert event["partitionkey"] == key
        events.append(event)
    return events


async def test_place_order_snapshots_product_and_emits_event(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer(phone="+49 30 555")
    product = await factory.product(title="Lease review", price="120.00")
    r = await client.post(
        "/orders",
        json={"product_id": product.id, "description": "My landlord raised the rent."},
        headers=factory.auth(customer)
        | {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    assert r.status_code == 201, r.text
    order = r.json()
    assert r.headers["location"] == f"/orders/{order['id']}"
    assert order["status"] == "submitted" and order["version"] == 1
    assert order["product"]["title"] == "Lease review" and order["product"]["price"] == "120.00"
    assert [p["title"] for p in order["progress"]] == ["Order received"]

    # The product changes later: the order keeps what the customer bought.
    admin = factory.auth(await factory.user(Role.ADMIN))
    await client.patch(f"/products/{product.id}", json={"price": "999.00", "title": "New"}, headers=admin)
    again = (await client.get(f"/orders/{order['id']}", headers=factory.auth(customer))).json()
    assert again["product"]["price"] == "120.00" and again["product"]["title"] == "Lease review"

    [event] = await _order_events(container)
    assert event["specversion"] == "1.0"
    assert event["type"] == "casebridge.orders.order-placed.v1"
    assert event["source"] == "/casebridge/order-intake"
    assert event["partitionkey"] == order["id"] and event["aggregateversion"] == 1
    assert str(event["traceparent"]).startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    data = event["data"]
    assert isinstance(data, dict)
    assert data["customer"]["phone"] == "+49 30 555"
    assert data["product"]["price"] == "120.00" and data["description"] == "My landlord raised the rent."


async def test_idempotency_key_returns_the_first_order(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    headers = factory.auth(customer) | {"Idempotency-Key": "k-1"}
    body = {"product_id": product.id, "description": "Help"}
    first, second = await asyncio.gather(
        client.post("/orders", json=body, headers=headers), client.post("/orders", json=body, headers=headers)
    )
    assert {first.status_code, second.status_code} == {201}
    assert first.json()["id"] == second.json()["id"]
    assert "true" in (first.headers.get("idempotent-replayed"), second.headers.get("idempotent-replayed"))
    assert len(await _order_events(container)) == 1
    other = await client.post("/orders", json=body | {"description": "Different"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    # Another customer may use the same key for their own order.
    someone = await factory.customer()
    r = await client.post("/orders", json=body, headers=factory.auth(someone) | {"Idempotency-Key": "k-1"})
    assert r.status_code == 201 and r.json()["id"] != first.json()["id"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"description": "no product"}, 422, "body.product_id"),
        ({"product_id": "missing", "description": "x"}, 404, "body.product_id"),
        ({"product_id": "PRODUCT", "description": ""}, 422, "body.description"),
        ({"product_id": "PRODUCT", "description": 5}, 422, "body.description"),
        ({"product_id": "PRODUCT", "description": "x", "price": "0.01"}, 422, "body.price"),
        ({"product_id": "ARCHIVED", "description": "x"}, 409, "body.product_id"),
    ],
)
async def test_place_order_rejects_bad_input(
    client: httpx.AsyncClient,
    factory: Factory,
    container: Container,
    body: dict[str, object],
    status: int,
    field: str,
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    archived = await factory.product(title="Old")
    admin = factory.auth(await factory.user(Role.ADMIN))
    await client.delete(f"/products/{archived.id}", headers=admin)
    ids = {"PRODUCT": product.id, "ARCHIVED": archived.id}
    body = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    before = await _counts(container)
    r = await client.post("/orders", json=body, headers=factory.auth(customer))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await _counts(container) == before


async def test_place_order_refuses_bad_json_huge_bodies_and_non_customers(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    before = await _counts(container)
    auth = factory.auth(customer)
    bad = await client.post(
        "/orders", content=b"{not json", headers=auth | {"content-type": "application/json"}
    )
    assert bad.status_code == 422
    huge = await client.post(
        "/orders", json={"product_id": product.id, "description": "x" * 2_000_000}, headers=auth
    )
    assert huge.status_code == 413
    assert (
        await client.post("/orders", json={"product_id": product.id, "description": "x"})
    ).status_code == 401
    for role in (Role.STAFF, Role.ADMIN, Role.DEPARTMENT):
        user = await factory.user(role, Department.SALES if role is Role.DEPARTMENT else None)
        r = await client.post(
            "/orders", json={"product_id": product.id, "description": "x"}, headers=factory.auth(user)
        )
        assert r.status_code == 403
    orders, _events = await _counts(container)
    assert orders == before[0]


async def test_an_account_switched_off_or_gone_cannot_order(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    """The token is still valid; the account behind it is what counts."""
    product = await factory.product()
    switched_off = await factory.customer()
    gone = await factory.customer()
    async with container.db.write_session() as s:
        await s.execute(update(User).where(col(User.id) == switched_off.id).values(active=False))
        await s.commit()
    headers = {"switched off": factory.auth(switched_off), "gone": factory.auth(gone)}
    async with container.db.write_session() as s:
        await s.execute(delete(User).where(col(User.id) == gone.id))
        await s.commit()
    before = await _counts(container)
    for who, auth in headers.items():
        r = await client.post("/orders", json={"product_id": product.id, "description": "x"}, headers=auth)
        assert r.status_code == 403, who
        assert r.headers["content-type"] == PROBLEM
        assert "not active" in r.json()["detail"]
    assert await _counts(container) == before


async def test_customers_see_only_their_own_orders(client: httpx.AsyncClient, factory: Factory) -> None:
    alice, bob = await factory.customer(), await factory.customer()
    product = await factory.product()
    mine = await client.post(
        "/orders", json={"product_id": product.id, "description": "a"}, headers=factory.auth(alice)
    )
    theirs = await client.post(
        "/orders", json={"product_id": product.id, "description": "b"}, headers=factory.auth(bob)
    )
    listed = (await client.get("/orders", headers=factory.auth(alice))).json()
    assert [o["id"] for o in listed["items"]] == [mine.json()["id"]] and listed["total"] == 1
    # Even asking for Bob's orders by customer id shows only Alice's.
    listed = (await client.get("/orders", params={"customer_id": bob.id}, headers=factory.auth(alice))).json()
    assert [o["id"] for o in listed["items"]] == [mine.json()["id"]]
    r = await client.get(f"/orders/{theirs.json()['id']}", headers=factory.auth(alice))
    assert r.status_code == 404  # exactly like a missing order
    assert (
        (await client.get("/orders/does-not-exist", headers=factory.auth(alice)))
        .json()["detail"]
        .startswith("no order")
    )
    r = await client.patch(
        f"/orders/{theirs.json()['id']}",
        json={"description": "hijack"},
        headers=factory.auth(alice) | {"If-Match": '"1"'},
    )
    assert r.status_code == 404
    assert (
        await client.post(f"/orders/{theirs.json()['id']}/cancel", headers=factory.auth(alice))
    ).status_code == 404

    staff = await factory.user(Role.STAFF)
    everything = (await client.get("/orders", headers=factory.auth(staff))).json()
    assert everything["total"] == 2
    only_bob = (
        await client.get("/orders", params={"customer_id": bob.id}, headers=factory.auth(staff))
    ).json()
    assert [o["id"] for o in only_bob["items"]] == [theirs.json()["id"]]
    dept = await factory.user(Role.DEPARTMENT, Department.FINANCE)
    assert (await client.get("/orders", headers=factory.auth(dept))).status_code == 403


async def test_list_orders_filters(client: httpx.AsyncClient, factory: Factory) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    p1, p2 = await factory.product(), await factory.product(title="Other")
    a = (await client.post("/orders", json={"product_id": p1.id, "description": "a"}, headers=auth)).json()
    (await client.post("/orders", json={"product_id": p2.id, "description": "b"}, headers=auth)).json()
    await client.post(f"/orders/{a['id']}/cancel", headers=auth)
    r = (await client.get("/orders", params={"status": "cancelled"}, headers=auth)).json()
    assert [o["id"] for o in r["items"]] == [a["id"]]
    r = (await client.get("/orders", params={"product_id": p2.id}, headers=auth)).json()
    assert r["total"] == 1 and r["items"][0]["product_title"] == "Other"
    r = await client.get("/orders", params={"status": "bogus"}, headers=auth)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.status"
    r = await client.get("/orders", params={"limit": 0}, headers=auth)
    assert r.status_code == 422


async def test_patch_order_uses_if_match_and_only_while_submitted(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    product = await factory.product()
    order = (
        await client.post("/orders", json={"product_id": product.id, "description": "v1"}, headers=auth)
    ).json()
    url = f"/orders/{order['id']}"
    missing = await client.patch(url, json={"description": "v2"}, headers=auth)
    assert missing.status_code == 428
    r = await client.patch(url, json={"description": "v2"}, headers=auth | {"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    assert [p["title"] for p in r.json()["progress"]] == ["Order received", "Description updated"]
    stale = await client.patch(url, json={"description": "v3"}, headers=auth | {"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["current_version"] == 2
    garbage = await client.patch(url, json={"description": "v3"}, headers=auth | {"If-Match": "abc"})
    assert garbage.status_code == 412
    extra = await client.patch(
        url, json={"description": "v3", "status": "completed"}, headers=auth | {"If-Match": '"2"'}
    )
    assert extra.status_code == 422
    staff = await factory.user(Role.STAFF)
    assert (
        await client.patch(url, json={"description": "x"}, headers=factory.auth(staff) | {"If-Match": '"2"'})
    ).status_code == 403

    await client.post(f"{url}/cancel", json={"reason": "changed my mind"}, headers=auth)
    late = await client.patch(url, json={"description": "v4"}, headers=auth | {"If-Match": '"3"'})
    assert late.status_code == 409 and late.json()["state"] == "cancelled"

    types = [e["type"] for e in await _order_events(container)]
    assert types == [
        "casebridge.orders.order-placed.v1",
        "casebridge.orders.order-updated.v1",
        "casebridge.orders.order-cancelled.v1",
    ]
    versions = [e["aggregateversion"] for e in await _order_events(container)]
    assert versions == [1, 2, 3]


async def test_cancel_order(client: httpx.AsyncClient, factory: Factory, container: Container) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    product = await factory.product()
    order = (
        await client.post("/orders", json={"product_id": product.id, "description": "x"}, headers=auth)
    ).json()
    url = f"/orders/{order['id']}/cancel"
    assert (await client.post(url, json={"reason": "x" * 3000}, headers=auth)).status_code == 422
    assert (await client.post(url, headers=auth | {"If-Match": '"7"'})).status_code == 412
    r = await client.post(url, json={"reason": "found another lawyer"}, headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "cancelled" and body["cancel_reason"] == "found another lawyer"
    assert body["progress"][-1]["title"] == "Order cancelled"
    again = await client.post(url, headers=auth)
    assert again.status_code == 200 and again.json()["version"] == body["version"]
    events = await _order_events(container)
    assert [e["type"] for e in events][-1] == "casebridge.orders.order-cancelled.v1"
    assert len(events) == 2
    data = events[-1]["data"]
    assert isinstance(data, dict) and data["cancelled_by"] == "customer"


async def test_staff_can_cancel_started_orders_customers_cannot(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer()
    product = await factory.product()
    order = (
        await client.post(
            "/orders", json={"product_id": product.id, "description": "x"}, headers=factory.auth(customer)
        )
    ).json()
    async with container.db.write_session() as s:
        row = await s.get(Order, order["id"])
        assert row is not None
        row.status = "in_progress"
        s.add(row)
        await s.commit()
    r = await client.post(f"/orders/{order['id']}/cancel", headers=factory.auth(customer))
    assert r.status_code == 409 and r.json()["state"] == "in_progress"
    supervisor = await factory.user(Role.SUPERVISOR)
    r = await client.post(
        f"/orders/{order['id']}/cancel", json={"reason": "duplicate"}, headers=factory.auth(supervisor)
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


async def test_orders_placed_at_once_share_transactions_and_a_refused_one_leaves_nothing(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customers = [await factory.customer() for _ in range(4)]
    product = await factory.product()
    before = await _counts(container)
    transactions = container.writes.transactions

    def order(n: int, product_id: str) -> object:
        body = {"product_id": product_id, "description": f"need {n}"}
        return client.post("/orders", json=body, headers=factory.auth(customers[n % 4]))

    requests = [order(n, product.id) for n in range(20)]
    requests.insert(9, order(99, "no-such-product"))  # refused in the middle of a batch
    answers = await asyncio.gather(*requests)  # type: ignore[call-overload]
    refused = answers.pop(9)
    assert refused.status_code == 404
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["errors"][0]["field"] == "body.product_id"
    assert [a.status_code for a in answers] == [201] * 20
    assert len({a.json()["id"] for a in answers}) == 20
    # Each placed once with its one event; fewer transactions than orders.
    assert await _counts(container) == (before[0] + 20, before[1] + 20)
    assert container.writes.transactions - transactions < 20
    described = sorted(e["data"]["description"] for e in await _order_events(container))  # type: ignore[index]
    assert described == sorted(f"need {n}" for n in range(20))


async def test_orders_placed_at_once_are_looked_up_together_and_each_answered_as_if_alone(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    """A shared transaction looks up its orders' customers, products and Idempotency-Keys
    a statement each, not per order (they wait for SQLite's write lock meanwhile), and each
    order is answered as if it had been placed alone: a retry gets its first order, a key
    used with another body is refused, another customer's same key is their own."""
    customers = [await factory.customer() for _ in range(3)]
    product = await factory.product()
    withdrawn = await factory.product(title="Withdrawn")
    async with container.db.write_session() as s:
        await s.execute(update(Product).where(col(Product.id) == withdrawn.id).values(active=False))
        await s.commit()
    body = {"product_id": product.id, "description": "Help"}
    first = await client.post(
        "/orders", json=body, headers=factory.auth(customers[0]) | {"Idempotency-Key": "again"}
    )
    assert first.status_code == 201

    def order(
        customer: User, key: str | None = None, product_id: str = product.id, description: str = "Help"
    ) -> Any:
        headers = factory.auth(customer) | ({"Idempotency-Key": key} if key else {})
        return client.post(
            "/orders", json={"product_id": product_id, "description": description}, headers=headers
        )

    requests = [order(customers[n % 3], key=f"k-{n}") for n in range(12)]
    requests += [order(customers[0], key="again"), order(customers[1], key="again")]
    with testing.statements_sent(container.db) as sent:
        answers = await asyncio.gather(*requests)
    assert [a.status_code for a in answers] == [201] * 14
    retry, someone_elses = answers[12:]
    assert retry.json()["id"] == first.json()["id"] and retry.headers["idempotent-replayed"] == "true"
    assert someone_elses.json()["id"] != first.json()["id"]
    assert len({a.json()["id"] for a in answers[:12]} | {someone_elses.json()["id"]}) == 13
    looked_up = [
        s
        for s in sent
        if s.startswith("SELECT") and any(f"FROM {t}" in s for t in ("users", "products", "idempotency_keys"))
    ]
    assert len(looked_up) < 14, looked_up  # alone, each order looked up twice (key; customer and product)

    # Refusals in the middle of a shared transaction: each its own answer, the rest placed.
    answers = await asyncio.gather(
        order(customers[0]),
        order(customers[0], key="again", description="Other"),
        order(customers[1]),
        order(customers[1], product_id=withdrawn.id),
        order(customers[2]),
        order(customers[2], product_id="no-such-product"),
    )
    assert [a.status_code for a in answers] == [201, 422, 201, 409, 201, 404]
    assert answers[1].json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert answers[3].json()["errors"][0]["field"] == "body.product_id"
    assert answers[5].json()["errors"][0]["field"] == "body.product_id"


async def _walk(client: httpx.AsyncClient, first: httpx.Response, between: Any = None) -> list[str]:
    """Every order id on the pages from ``first`` on, following the ``rel="next"`` links."""
    r, seen = first, []
    while True:
        assert r.status_code == 200, r.text
        seen += [o["id"] for o in r.json()["items"]]
        if between is not None:
            await between()
        if "next" not in r.links:
            assert r.json()["next_cursor"] is None
            return seen
        assert r.links["next"]["url"].endswith("cursor=" + r.json()["next_cursor"])
        r = await client.get(r.links["next"]["url"], headers=first.request.headers)


async def test_cursor_pages_return_each_order_once_while_others_are_placed(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, other = await factory.customer(), await factory.customer()
    product = await factory.product()
    placed = []
    for n in range(7):
        r = await client.post(
            "/orders", json={"product_id": product.id, "description": f"{n}"}, headers=factory.auth(customer)
        )
        placed.append(r.json()["id"])
    # Two orders in the same microsecond: the id keeps them apart at a page boundary.
    async with container.uow() as uow:
        moment = (await uow.session.get(Order, placed[3])).created_at  # type: ignore[union-attr]
        await uow.session.execute(update(Order).where(col(Order.id) == placed[4]).values(created_at=moment))
        await uow.commit()

    async def place_another() -> None:
        for who in (customer, other):
            r = await client.post(
                "/orders", json={"product_id": product.id, "description": "new"}, headers=factory.auth(who)
            )
            assert r.status_code == 201

    first = await client.get("/orders", params={"limit": 2}, headers=factory.auth(customer))
    assert first.links["first"]["url"] == "/orders?limit=2"
    seen = await _walk(client, first, place_another)
    assert sorted(seen) == sorted(placed) and len(seen) == 7  # none twice, none missed, only hers
    # Staff see everybody's; the same walk over all orders, a filter kept across the pages.
    staff = await factory.user(Role.STAFF)
    first = await client.get(
        "/orders", params={"limit": 3, "customer_id": other.id}, headers=factory.auth(staff)
    )
    assert first.json()["total"] == 4
    assert first.links["first"]["url"] == f"/orders?limit=3&customer_id={other.id}"
    assert "customer_id=" + other.id in first.links["next"]["url"]
    theirs = await _walk(client, first)
    assert len(theirs) == 4 == len(set(theirs)) and not set(theirs) & set(placed)
    # Offset pages are as they were: the screens and existing clients keep working.
    by_offset = (
        await client.get("/orders", params={"limit": 2, "offset": 2}, headers=factory.auth(customer))
    ).json()
    assert by_offset["offset"] == 2 and len(by_offset["items"]) == 2 and by_offset["next_cursor"]


async def test_list_orders_refuses_bad_cursors_and_limits(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    product = await factory.product()
    for n in range(2):
        await client.post("/orders", json={"product_id": product.id, "description": f"{n}"}, headers=auth)
    cursor = (await client.get("/orders", params={"limit": 1}, headers=auth)).json()["next_cursor"]
    for params, field in [
        ({"cursor": "not-a-cursor"}, "query.cursor"),
        ({"cursor": cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")}, "query.cursor"),
        ({"cursor": cursor, "status": "submitted"}, "query.cursor"),  # another filter than it was made for
        ({"cursor": cursor, "offset": 1}, "query.offset"),
        ({"limit": 201}, "query.limit"),
        ({"limit": 0}, "query.limit"),
    ]:
        r = await client.get("/orders", params=params, headers=auth)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["errors"][0]["field"] == field
    assert (await client.get("/orders", params={"cursor": cursor}, headers=auth)).status_code == 200
