"""Idempotency-Key on the ledger's creating POSTs: one row per key, its answer replayed (issue 27)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from casebridge_shared.testing import TokenMinter
from customer_ledger.bootstrap import Container
from customer_ledger.customers.models import Customer
from customer_ledger.db import idempotent_requests
from customer_ledger.journal import service as journal


async def customers(container: Container) -> int:
    async with container.db.session() as session:
        return int((await session.execute(select(func.count()).select_from(Customer))).scalar_one())


async def test_a_retry_with_the_key_answers_the_first_customer_again(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    keyed = {**finance, "Idempotency-Key": "register-ada"}
    first = await api.post("/customers", json={"full_name": "Ada"}, headers=keyed)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await api.post("/customers", json={"full_name": "Ada"}, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await customers(container) == 1

    # Another body with the same key is a mistake, not a new customer.
    other = await api.post("/customers", json={"full_name": "Bo"}, headers=keyed)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert await customers(container) == 1

    # Keys are the caller's own: another caller's same key creates their own customer.
    process = minter.headers("process-user", "department", department="process")
    theirs = await api.post(
        "/customers", json={"full_name": "Ada"}, headers={**process, "Idempotency-Key": "register-ada"}
    )
    assert theirs.status_code == 201, theirs.text
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != first.json()["id"]
    # Without a key, every request creates.
    plain = await api.post("/customers", json={"full_name": "Ada"}, headers=finance)
    assert plain.status_code == 201
    assert await customers(container) == 3


async def test_two_requests_with_the_same_key_at_once_create_one_customer(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    keyed = {**minter.headers("finance-user", "department", department="finance"), "Idempotency-Key": "k-1"}
    answers = await asyncio.gather(
        *(api.post("/customers", json={"full_name": "Cy"}, headers=keyed) for _ in range(6))
    )
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert [a.headers.get("Idempotent-Replayed") for a in answers].count(None) == 1
    assert await customers(container) == 1
    async with container.db.session() as session:
        kept = (await session.execute(select(idempotent_requests))).all()
    assert [(k.scope, k.caller, k.key, k.status_code) for k in kept] == [
        ("POST /customers", "finance-user", "k-1", 201)
    ]


async def test_the_key_is_scoped_to_the_customer_it_posts_to(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    ids = []
    for name in ("Ada", "Bo"):
        r = await api.post("/customers", json={"full_name": name}, headers=finance)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    keyed = {**finance, "Idempotency-Key": "pay-1"}
    payment = {
        "amount": "10.00",
        "currency": "EUR",
        "reference": "inv-1",
        "received_at": "2026-12-01T10:00:00Z",
    }
    a = await api.post(f"/customers/{ids[0]}/payments", json=payment, headers=keyed)
    b = await api.post(f"/customers/{ids[1]}/payments", json=payment, headers=keyed)
    assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
    assert a.json()["id"] != b.json()["id"]
    again = await api.post(f"/customers/{ids[0]}/payments", json=payment, headers=keyed)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == a.json()


async def test_a_grant_is_replayed_and_a_bad_key_is_a_problem(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    grant = {"department": "finance", "table": "progress", "scope": "associated"}
    first = await api.post("/grants", json=grant, headers={**admin, "Idempotency-Key": "g"})
    again = await api.post("/grants", json=grant, headers={**admin, "Idempotency-Key": "g"})
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    listed = await api.get("/grants", headers=admin)
    assert [g["id"] for g in listed.json()].count(first.json()["id"]) == 1
    assert len(listed.json()) == 1

    too_long = await api.post("/grants", json=grant, headers={**admin, "Idempotency-Key": "k" * 201})
    assert too_long.status_code == 422
    assert too_long.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in too_long.text


async def test_a_correction_retried_with_its_key_is_journaled_once(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    admin = minter.headers("admin-1", "admin")
    created = await api.post("/customers", json={"full_name": "Ada"}, headers=finance)
    changes = await api.get("/audit/changes", params={"customer_id": created.json()["id"]}, headers=admin)
    change = changes.json()["items"][-1]["journal_index"]
    async with container.db.session() as session:
        before = await journal.tree_size(session)

    path = f"/audit/records/{change}/corrections"
    fix = {"corrected": {"reason": "registered at the fair"}, "reason": "reason was missing"}
    keyed = {**admin, "Idempotency-Key": "fix-1"}
    first = await api.post(path, json=fix, headers=keyed)
    again = await api.post(path, json=fix, headers=keyed)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    async with container.db.session() as session:
        # One correction journaled: the replay journals nothing.
        assert await journal.tree_size(session) == before + 1
    other = await api.post(path, json={**fix, "reason": "another"}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    listed = await api.get("/audit/changes", params={"customer_id": created.json()["id"]}, headers=admin)
    assert [len(i["corrections"]) for i in listed.json()["items"]][-1] == 1
