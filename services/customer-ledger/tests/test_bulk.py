"""POST /bulk: many demands, progress entries and payments at once, each journaled, all or none."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlmodel import select

from casebridge_shared.testing import TokenMinter, count_rows
from customer_ledger.access.models import ChangeRecord
from customer_ledger.bootstrap import Container
from customer_ledger.customers.models import Payment, ProgressEntry
from customer_ledger.journal.models import JournalEntry
from customer_ledger.records import differences, rebuild, snapshot

PAYMENT = {"amount": "120.50", "currency": "EUR", "received_at": "2026-11-20T10:00:00+01:00"}


async def _customer(api: httpx.AsyncClient, headers: dict[str, str], name: str) -> str:
    r = await api.post("/customers", json={"full_name": name}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _progress(customer_id: str, stage: str) -> dict[str, Any]:
    return {"kind": "progress", "customer_id": customer_id, "record": {"project": "p", "stage": stage}}


def _payment(customer_id: str, **changes: Any) -> dict[str, Any]:
    return {"kind": "payment", "customer_id": customer_id, "record": {**PAYMENT, **changes}}


async def test_each_operation_is_recorded_and_journaled_as_its_own_request_would_be(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    a, b = await _customer(api, finance, "Ada"), await _customer(api, finance, "Ben")
    entries = await count_rows(container.db, JournalEntry)
    operations = [
        _payment(a, reference="stmt-1"),
        _progress(a, "invoiced"),
        {"kind": "demand", "customer_id": b, "record": {"title": "Lease", "description": "Review"}},
        _payment(b, amount="7", reference="stmt-2"),
    ]
    r = await api.post("/bulk", json={"operations": operations}, headers=finance)
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [i["kind"] for i in items] == ["payment", "progress", "demand", "payment"]
    assert [i["record"]["customer_id"] for i in items] == [a, a, b, b]
    assert items[0]["record"]["reference"] == "stmt-1" and items[3]["record"]["amount"] == "7.00"
    assert items[1]["record"]["department"] == "finance"

    # One journal entry and one change record per operation, by the writer.
    assert await count_rows(container.db, JournalEntry) == entries + 4
    async with container.db.session() as s:
        changes = (await s.exec(select(ChangeRecord).where(ChangeRecord.changed_by == "finance-user"))).all()
        recorded = {c.record_id for c in changes if c.operation == "insert"}
    assert {i["record"]["id"] for i in items} <= recorded
    # The rows are views of the journal like any others.
    async with container.uow() as uow:
        live = await snapshot(uow.session)
        await rebuild(uow.session)
        assert differences(live, await snapshot(uow.session)) == []
        await uow.rollback()


async def test_the_first_refused_operation_refuses_the_request_and_nothing_is_recorded(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    finance = minter.headers("finance-user", "department", department="finance")
    sales = minter.headers("sales-user", "department", department="sales")
    ours = await _customer(api, finance, "Ada")
    theirs = await _customer(api, admin, "Held by sales")  # finance is not associated
    entries = await count_rows(container.db, JournalEntry)

    cases = [
        (finance, [_progress(ours, "a"), _progress(theirs, "b")], 404, 1),  # not associated
        (finance, [_progress(ours, "a"), _payment(ours), _progress("nope", "c")], 404, 2),  # no such customer
        (
            sales,
            [
                {"kind": "demand", "customer_id": theirs, "record": {"title": "t", "description": "d"}},
                _payment(theirs),
            ],
            403,
            1,
        ),
    ]
    for headers, operations, status, index in cases:
        r = await api.post("/bulk", json={"operations": operations}, headers=headers)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["operation"] == index
        assert body["detail"].startswith(f"operations[{index}]: ")
        assert body["errors"] == [{"field": f"body.operations.{index}", "reason": body["detail"]}]
    for who in (minter.headers("staff-1", "staff"), minter.headers(ours, "customer")):
        r = await api.post("/bulk", json={"operations": [_progress(ours, "x")]}, headers=who)
        assert r.status_code == 403, r.text
    assert (await api.post("/bulk", json={"operations": [_progress(ours, "x")]})).status_code == 401

    assert await count_rows(container.db, JournalEntry) == entries
    assert await count_rows(container.db, ProgressEntry) == 0
    assert await count_rows(container.db, Payment) == 0


async def test_a_refused_bulk_request_does_not_hold_back_requests_sharing_its_transaction(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    ours = await _customer(api, finance, "Ada")
    refused, single, bulk = await asyncio.gather(
        api.post(
            "/bulk", json={"operations": [_progress(ours, "a"), _progress("nope", "b")]}, headers=finance
        ),
        api.post(f"/customers/{ours}/progress", json={"project": "p", "stage": "alone"}, headers=finance),
        api.post("/bulk", json={"operations": [_progress(ours, "c"), _progress(ours, "d")]}, headers=finance),
    )
    assert (refused.status_code, single.status_code, bulk.status_code) == (404, 201, 201)
    async with container.db.session() as s:
        stages = sorted((await s.exec(select(ProgressEntry.stage))).all())
    assert stages == ["alone", "c", "d"]


async def test_bad_bulk_input_is_refused_with_the_field(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter, monkeypatch: pytest.MonkeyPatch
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    ours = await _customer(api, finance, "Ada")
    entries = await count_rows(container.db, JournalEntry)
    cases: list[tuple[Any, int, str]] = [
        ({"operations": []}, 422, "operations"),
        ({}, 422, "operations"),
        ({"operations": [{"kind": "refund", "customer_id": ours, "record": {}}]}, 422, "kind"),
        ({"operations": [_payment(ours, amount="-5")]}, 422, "body.operations.0.payment.record.amount"),
        ({"operations": [_payment(ours, amount="1.005")]}, 422, "at most 2 decimal places"),
        (
            {"operations": [_progress(ours, "a"), _payment(ours, received_at="2026-11-20T10:00:00")]},
            422,
            "operations.1",
        ),
        ({"operations": [{**_progress(ours, "a"), "extra": 1}]}, 422, "extra"),
        ({"operations": [_progress("x" * 37, "a")]}, 422, "customer_id"),
    ]
    for body, status, mentioned in cases:
        r = await api.post("/bulk", json=body, headers=finance)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert mentioned in r.text, r.text

    monkeypatch.setattr(container.settings, "bulk_max_operations", 3)
    r = await api.post(
        "/bulk", json={"operations": [_progress(ours, str(i)) for i in range(4)]}, headers=finance
    )
    assert r.status_code == 413, r.text
    assert r.json()["errors"][0]["field"] == "body.operations" and "at most 3" in r.json()["detail"]
    r = await api.post(
        "/bulk", json={"operations": [_progress(ours, str(i)) for i in range(3)]}, headers=finance
    )
    assert r.status_code == 201, r.text
    assert await count_rows(container.db, JournalEntry) == entries + 3


async def test_an_import_retried_with_its_key_is_recorded_once(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    a = await _customer(api, finance, "Ada")
    entries = await count_rows(container.db, JournalEntry)
    body = {"operations": [_payment(a, reference="stmt-1"), _progress(a, "invoiced")]}
    keyed = {**finance, "Idempotency-Key": "statement-2026-11"}
    first = await api.post("/bulk", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await api.post("/bulk", json=body, headers=keyed)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await count_rows(container.db, Payment) == 1
    assert await count_rows(container.db, ProgressEntry) == 1
    assert await count_rows(container.db, JournalEntry) == entries + 2

    other = await api.post("/bulk", json={"operations": [_payment(a, reference="stmt-2")]}, headers=keyed)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    too_long = await api.post("/bulk", json=body, headers={**finance, "Idempotency-Key": "k" * 201})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert await count_rows(container.db, Payment) == 1
