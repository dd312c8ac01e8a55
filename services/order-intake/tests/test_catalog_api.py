"""Catalog: public browsing and admin changes (A1, A8)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from casebridge_shared.auth import Role
from order_intake.bootstrap import Container
from order_intake.db import outbox

from .conftest import Factory

NEW = {
    "title": "Will drafting",
    "description": "We draft your will.",
    "deliverables": ["Draft will", "Signing guide"],
    "category": "inheritance",
    "price": "350.00",
    "currency": "EUR",
    "attributes": {"turnaround_days": 7},
}


async def _events(container: Container) -> list[str]:
    async with container.db.session() as s:
        return list(
            (await s.execute(select(outbox.outbox.c.event_type).order_by(outbox.outbox.c.id))).scalars()
        )


async def test_admin_product_lifecycle_emits_events(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    auth = factory.auth(await factory.user(Role.ADMIN))
    r = await client.post("/products", json=NEW, headers=auth)
    assert r.status_code == 201, r.text
    product = r.json()
    assert product["price"] == "350.00" and product["version"] == 1 and r.headers["etag"] == '"1"'
    pid = product["id"]

    r = await client.patch(f"/products/{pid}", json={"price": "399.50"}, headers=auth | {"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["price"] == "399.50" and r.json()["version"] == 2
    stale = await client.patch(f"/products/{pid}", json={"title": "x"}, headers=auth | {"If-Match": '"1"'})
    assert stale.status_code == 412

    r = await client.delete(f"/products/{pid}", headers=auth)
    assert r.status_code == 200 and r.json()["archived"] is True and r.json()["active"] is False
    assert (await client.get(f"/products/{pid}")).status_code == 404  # gone for the public
    assert (await client.get(f"/products/{pid}", headers=auth)).status_code == 200  # admins still see it
    assert (await client.patch(f"/products/{pid}", json={"title": "x"}, headers=auth)).status_code == 409
    assert (await client.delete(f"/products/{pid}", headers=auth)).status_code == 200  # idempotent

    types = [t for t in await _events(container) if ".catalog." in t]
    assert types == [
        "casebridge.catalog.product-created.v1",
        "casebridge.catalog.product-updated.v1",
        "casebridge.catalog.product-archived.v1",
    ]


async def test_a_product_read_again_with_its_etag_is_not_modified(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    auth = factory.auth(await factory.user(Role.ADMIN))
    created = await client.post("/products", json=NEW, headers=auth)
    url = created.headers["location"]
    read = await client.get(url)
    assert read.status_code == 200 and read.headers["etag"] == '"1"'
    cached = await client.get(url, headers={"If-None-Match": read.headers["etag"]})
    assert cached.status_code == 304 and cached.headers["etag"] == '"1"' and cached.content == b""
    changed = await client.patch(url, json={"price": "399.50"}, headers=auth | {"If-Match": '"1"'})
    assert changed.headers["etag"] == '"2"'
    # The copy at version 1 is stale now: the product is answered again, with its new ETag.
    fresh = await client.get(url, headers={"If-None-Match": 'W/"1", "x"'})
    assert fresh.status_code == 200 and fresh.headers["etag"] == '"2"' and fresh.json()["price"] == "399.50"
    stale = await client.patch(url, json={"price": "1.00"}, headers=auth | {"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["errors"][0]["field"] == "header.If-Match"
    too_long = await client.get(url, headers={"If-None-Match": "x" * 1001})
    assert too_long.status_code == 422 and "header.If-None-Match" in too_long.text


async def test_public_listing_filters_and_pages(client: httpx.AsyncClient, factory: Factory) -> None:
    for i in range(5):
        await factory.product(title=f"Contract {i}", category="contracts")
    await factory.product(title="Tenancy help", category="tenancy", description="Landlord trouble")
    await factory.product(title="Hidden", category="tenancy", active=False)
    r = await client.get("/products", params={"category": "contracts", "limit": 2, "offset": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5 and [p["title"] for p in body["items"]] == ["Contract 2", "Contract 3"]
    r = await client.get("/products", params={"q": "LANDLORD"})
    assert [p["title"] for p in r.json()["items"]] == ["Tenancy help"]
    # The public never sees inactive products, even when asking.
    r = await client.get("/products", params={"active": "false"})
    assert r.json()["total"] == 6 and all(p["active"] for p in r.json()["items"])
    admin = factory.auth(await factory.user(Role.ADMIN))
    r = await client.get("/products", params={"active": "false"}, headers=admin)
    assert [p["title"] for p in r.json()["items"]] == ["Hidden"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"currency": "EURO"}, "body.currency"),
        ({"currency": "XXY"}, "body"),
        ({"price": "-1"}, "body.price"),
        ({"price": "10.555", "currency": "EUR"}, "body"),
        ({"price": "10.5", "currency": "JPY"}, "body"),
        ({"price": "abc"}, "body.price"),
        ({"title": ""}, "body.title"),
        ({"category": "Has Spaces"}, "body.category"),
        ({"unknown": 1}, "body.unknown"),
    ],
)
async def test_create_product_rejects_bad_input(
    client: httpx.AsyncClient, factory: Factory, container: Container, change: dict[str, object], field: str
) -> None:
    auth = factory.auth(await factory.user(Role.ADMIN))
    before = await _events(container)
    r = await client.post("/products", json=NEW | change, headers=auth)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await _events(container) == before  # nothing half-written


async def test_patch_rejects_bad_price_for_currency(client: httpx.AsyncClient, factory: Factory) -> None:
    auth = factory.auth(await factory.user(Role.ADMIN))
    product = await factory.product(price="100.50", currency="EUR")
    r = await client.patch(f"/products/{product.id}", json={"currency": "JPY"}, headers=auth)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.price"
    r = await client.patch(f"/products/{product.id}", json={"title": None}, headers=auth)
    assert r.status_code == 422


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.STAFF, Role.SUPERVISOR])
async def test_only_admins_change_the_catalog(
    client: httpx.AsyncClient, factory: Factory, role: Role
) -> None:
    user = await factory.customer() if role is Role.CUSTOMER else await factory.user(role)
    auth = factory.auth(user)
    product = await factory.product()
    assert (await client.post("/products", json=NEW, headers=auth)).status_code == 403
    assert (
        await client.patch(f"/products/{product.id}", json={"title": "x"}, headers=auth)
    ).status_code == 403
    assert (await client.delete(f"/products/{product.id}", headers=auth)).status_code == 403
    assert (await client.post("/products", json=NEW)).status_code == 401


async def test_unknown_product_is_404(client: httpx.AsyncClient, factory: Factory) -> None:
    auth = factory.auth(await factory.user(Role.ADMIN))
    r = await client.get("/products/does-not-exist")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (await client.patch("/products/nope", json={"title": "x"}, headers=auth)).status_code == 404
    assert (await client.delete("/products/nope", headers=auth)).status_code == 404


async def test_listing_rejects_bad_query_parameters(client: httpx.AsyncClient) -> None:
    for params in ({"limit": 0}, {"limit": 1000}, {"offset": -1}, {"active": "maybe"}, {"q": "x" * 300}):
        r = await client.get("/products", params=params)
        assert r.status_code == 422, params
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"].startswith("query.")
    r = await client.get("/products", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401  # a bad token is refused, not silently treated as anonymous
