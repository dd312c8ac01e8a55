"""Idempotency-Key on order-intake's creating POSTs through the shared helper (issues 27, 28)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from casebridge_shared.auth import Role
from casebridge_shared.db import table_of, utcnow
from order_intake.bootstrap import Container
from order_intake.catalog.models import Product
from order_intake.db import idempotent_requests
from order_intake.identity.models import User
from order_intake.orders.models import IdempotencyKey, Order

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


async def test_keys_are_forgotten_after_their_hours(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = factory.auth(await factory.user(Role.ADMIN))
    customer = factory.auth(await factory.customer())
    product = await factory.product()
    old = await client.post("/products", json=NEW, headers=admin | {"Idempotency-Key": "old"})
    fresh = await client.post("/products", json=NEW, headers=admin | {"Idempotency-Key": "fresh"})
    order = {"product_id": product.id, "description": "Help"}
    placed = await client.post("/orders", json=order, headers=customer | {"Idempotency-Key": "old"})
    assert (old.status_code, fresh.status_code, placed.status_code) == (201, 201, 201)
    keys = table_of(IdempotencyKey)
    past = utcnow() - timedelta(hours=container.settings.idempotency_key_hours, minutes=1)
    async with container.db.write_session() as session:
        await session.execute(
            update(idempotent_requests).where(idempotent_requests.c.key == "old").values(created_at=past)
        )
        await session.execute(update(keys).values(created_at=past))
        await session.commit()

    stop = asyncio.Event()
    purging = asyncio.create_task(container.key_purger().run(stop))
    try:
        async with asyncio.timeout(10):
            while True:
                async with container.db.session() as session:
                    left = (await session.execute(select(idempotent_requests.c.key))).scalars().all()
                    orders_keys = (await session.execute(select(func.count()).select_from(keys))).scalar_one()
                if list(left) == ["fresh"] and orders_keys == 0:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await purging

    # A forgotten key creates again; a remembered one still answers the first product.
    again = await client.post("/products", json=NEW, headers=admin | {"Idempotency-Key": "old"})
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != old.json()["id"]
    still = await client.post("/products", json=NEW, headers=admin | {"Idempotency-Key": "fresh"})
    assert still.headers["idempotent-replayed"] == "true" and still.json()["id"] == fresh.json()["id"]
    reordered = await client.post("/orders", json=order, headers=customer | {"Idempotency-Key": "old"})
    assert reordered.status_code == 201 and reordered.json()["id"] != placed.json()["id"]


async def test_a_machine_client_created_again_with_its_key_gives_the_same_secret_kept_sealed(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = factory.auth(await factory.user(Role.ADMIN))
    body = {"client_id": "ledger-exporter", "description": "nightly export", "roles": ["auditor"]}
    keyed = admin | {"Idempotency-Key": "client-1"}
    first = await client.post("/machine-clients", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert first.headers["location"] == "/machine-clients/ledger-exporter"
    assert first.headers["cache-control"] == "no-store"
    again = await client.post("/machine-clients", json=body, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["cache-control"] == "no-store"
    # The same secret, in the clear for the caller; the one secret that works.
    assert again.json() == first.json()
    secret = first.json()["client_secret"]
    async with container.db.session() as session:
        kept = (await session.execute(select(idempotent_requests))).one()
    assert secret not in str(tuple(kept))
    assert kept.response["client_secret"].startswith("fernet:")
    token = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "ledger-exporter", "client_secret": secret},
    )
    assert token.status_code == 200, token.text

    other = await client.post("/machine-clients", json=body | {"roles": ["webhook_admin"]}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    # Without a key the same client_id is the conflict it always was.
    unkeyed = await client.post("/machine-clients", json=body, headers=admin)
    assert unkeyed.status_code == 409
    too_long = await client.post(
        "/machine-clients", json=body, headers=admin | {"Idempotency-Key": "k" * 201}
    )
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "header.Idempotency-Key"


async def test_a_sign_up_retried_with_its_key_answers_the_account_it_created(
    client: httpx.AsyncClient, container: Container
) -> None:
    before = await count(container, User)
    body = {"email": "Ada@Example.org", "password": PASSWORD, "full_name": "Ada Lovelace"}
    keyed = {"Idempotency-Key": "sign-up-1"}
    first = await client.post("/auth/register", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    # The retry's email differs in case only: the same address, the same account.
    again = await client.post("/auth/register", json=body, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == "/me" and again.headers["etag"] == first.headers["etag"]
    assert await count(container, User) == before + 1
    async with container.db.session() as session:
        kept = (await session.execute(select(idempotent_requests))).one()
    assert kept.caller == "register:ada@example.org"
    assert PASSWORD not in str(tuple(kept))

    # The same key with another name is a mistake; without a key the email is taken (409).
    other = await client.post("/auth/register", json=body | {"full_name": "Other"}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert (await client.post("/auth/register", json=body)).status_code == 409
    # The key is scoped to the email: the same key for another address signs that one up.
    bo = await client.post("/auth/register", json=body | {"email": "bo@example.org"}, headers=keyed)
    assert bo.status_code == 201 and "idempotent-replayed" not in bo.headers
    too_long = await client.post(
        "/auth/register", json=body | {"email": "cy@example.org"}, headers={"Idempotency-Key": "k" * 201}
    )
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert await count(container, User) == before + 2
