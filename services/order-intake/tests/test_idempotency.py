"""Idempotency-Key on order-intake's creating POSTs through the shared helper (issues 27, 28)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from casebridge_shared.auth import Role
from order_intake.bootstrap import Container
from order_intake.catalog.models import Product
from order_intake.db import idempotent_requests
from order_intake.identity.models import User
from order_intake.orders.models import Order

from .conftest import PASSWORD, Factory

NEW = {
    "title": "Will drafting",
    "description": "We draft your will.",
    "deliverables": ["Draft will"],
    "category": "inheritance",
    "price": "350.00",
    "currency": "EUR",
}


async def count(container: Container, model: type[Product] | type[User] | type[Order]) -> int:
    async with container.db.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_product_posted_again_with_its_key_is_the_first_one(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = factory.auth(await factory.user(Role.ADMIN))
    keyed = admin | {"Idempotency-Key": "product-1"}
    first = await client.post("/products", json=NEW, headers=keyed)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/products", json=NEW, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"] == f"/products/{first.json()['id']}"
    assert again.headers["etag"] == first.headers["etag"] == '"1"'
    assert await count(container, Product) == 1

    other = await client.post("/products", json=NEW | {"title": "Other"}, headers=keyed)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert await count(container, Product) == 1

    # Another admin's same key is theirs.
    theirs = await client.post(
        "/products",
        json=NEW,
        headers=factory.auth(await factory.user(Role.ADMIN)) | {"Idempotency-Key": "product-1"},
    )
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
    assert await count(container, Product) == 2


async def test_the_same_key_at_once_creates_one_product(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    keyed = factory.auth(await factory.user(Role.ADMIN)) | {"Idempotency-Key": "at-once"}
    answers = await asyncio.gather(*(client.post("/products", json=NEW, headers=keyed) for _ in range(5)))
    created = [a for a in answers if a.status_code == 201]
    # The losers answer the winner's product, or 409 (retry) while its answer is not kept yet.
    assert all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in created}) == 1
    assert await count(container, Product) == 1
    retry = await client.post("/products", json=NEW, headers=keyed)
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["id"] == created[0].json()["id"]
    async with container.db.session() as session:
        kept = (
            await session.execute(select(idempotent_requests.c.scope, idempotent_requests.c.status_code))
        ).all()
    assert [tuple(k) for k in kept] == [("POST /products", 201)]


async def test_a_user_created_again_with_its_key_is_the_first_one(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = factory.auth(await factory.user(Role.ADMIN))
    before = await count(container, User)
    body = {
        "email": "new.staff@example.com",
        "password": PASSWORD,
        "full_name": "New Staff",
        "roles": ["staff"],
    }
    keyed = admin | {"Idempotency-Key": "user-1"}
    first = await client.post("/users", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/users/{first.json()['id']}"
    again = await client.post("/users", json=body, headers=keyed)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await count(container, User) == before + 1
    # The password is not part of the kept fingerprint (nor kept at all).
    async with container.db.session() as session:
        kept = (await session.execute(select(idempotent_requests))).one()
    assert PASSWORD not in str(tuple(kept))
    other = await client.post("/users", json=body | {"full_name": "Other"}, headers=keyed)
    assert other.status_code == 422


async def test_an_order_keeps_its_own_key_handling(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    """Orders keep their key on the order's own table (the hot path), with the shared contract."""
    product = await factory.product()
    auth = factory.auth(await factory.customer())
    keyed = auth | {"Idempotency-Key": "order-1"}
    body = {"product_id": product.id, "description": "Help"}
    answers = await asyncio.gather(*(client.post("/orders", json=body, headers=keyed) for _ in range(4)))
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert [a.headers.get("idempotent-replayed") for a in answers].count(None) == 1
    assert await count(container, Order) == 1
    other = await client.post("/orders", json=body | {"description": "Other"}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    bad = await client.post("/orders", json=body, headers=auth | {"Idempotency-Key": "x" * 201})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.text


async def test_a_bad_key_is_a_problem_naming_the_header(client: httpx.AsyncClient, factory: Factory) -> None:
    admin = factory.auth(await factory.user(Role.ADMIN))
    for path, body in (("/products", NEW), ("/users", {"email": "a@example.com"})):
        r = await client.post(path, json=body, headers=admin | {"Idempotency-Key": "k" * 201})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "header.Idempotency-Key" in [e["field"] for e in r.json()["errors"]]
