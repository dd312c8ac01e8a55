"""A customer's ETag: its version on reads, If-Match on changes, If-None-Match on reads (issue 27)."""

from __future__ import annotations

import httpx

from casebridge_shared.testing import TokenMinter
from customer_ledger.bootstrap import Container
from customer_ledger.records import differences, rebuild, snapshot


async def sales_reading_customers(api: httpx.AsyncClient, minter: TokenMinter) -> dict[str, str]:
    """Sales, with admin's grant to read the customers it is associated with."""
    grant = {"department": "sales", "table": "customers", "scope": "associated"}
    granted = await api.post("/grants", json=grant, headers=minter.headers("admin-1", "admin"))
    assert granted.status_code == 201, granted.text
    return minter.headers("sales-user", "department", department="sales")


async def test_the_customer_etag_follows_its_changes(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    sales = await sales_reading_customers(api, minter)
    created = await api.post("/customers", json={"full_name": "Ada"}, headers=sales)
    assert created.status_code == 201, created.text
    url = f"/customers/{created.json()['id']}"

    read = await api.get(url, headers=sales)
    assert read.status_code == 200 and read.headers["etag"] == '"1"'
    cached = await api.get(url, headers={**sales, "If-None-Match": '"1"'})
    assert cached.status_code == 304 and cached.headers["etag"] == '"1"' and cached.content == b""

    stale = await api.patch(
        url, json={"phone": "+43 1 234", "reason": "called"}, headers={**sales, "If-Match": '"7"'}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["errors"][0]["field"] == "header.If-Match"

    changed = await api.patch(
        url, json={"phone": "+43 1 234", "reason": "called"}, headers={**sales, "If-Match": '"1"'}
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == '"2"' and changed.json()["version"] == 2
    # The copy of version 1 is no longer current: the read answers the customer again.
    fresh = await api.get(url, headers={**sales, "If-None-Match": 'W/"1"'})
    assert fresh.status_code == 200 and fresh.headers["etag"] == '"2"'
    assert fresh.json()["phone"] == "+43 1 234"

    # If-Match stays optional (the workspace's screens send none): last write wins.
    plain = await api.patch(url, json={"organisation": "Ada Ltd", "reason": "letterhead"}, headers=sales)
    assert plain.status_code == 200 and plain.headers["etag"] == '"3"'

    # The hand-off changes the customer too: a stale tag is refused, the current one moves it.
    refused = await api.post(
        f"{url}/handoff", json={"reason": "signed"}, headers={**sales, "If-Match": '"2"'}
    )
    assert refused.status_code == 412
    moved = await api.post(f"{url}/handoff", json={"reason": "signed"}, headers={**sales, "If-Match": '"3"'})
    assert moved.status_code == 200, moved.text
    assert moved.headers["etag"] == '"4"' and moved.json()["stage"] == "finance"


async def test_a_bad_if_match_or_if_none_match_is_answered(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    sales = await sales_reading_customers(api, minter)
    created = await api.post("/customers", json={"full_name": "Bo"}, headers=sales)
    url = f"/customers/{created.json()['id']}"
    bad = await api.patch(url, json={"phone": "1", "reason": "r"}, headers={**sales, "If-Match": "yesterday"})
    assert bad.status_code == 412 and bad.json()["errors"][0]["field"] == "header.If-Match"
    # An If-None-Match that names no tag of ours matches nothing: the customer is read.
    other = await api.get(url, headers={**sales, "If-None-Match": '"x", "nope"'})
    assert other.status_code == 200 and other.headers["etag"] == '"1"'
    too_long = await api.get(url, headers={**sales, "If-None-Match": "x" * 1001})
    assert too_long.status_code == 422 and "header.If-None-Match" in too_long.text


async def test_demands_progress_and_payments_carry_versions_and_honour_if_match(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    admin = minter.headers("admin-1", "admin")
    created = await api.post("/customers", json={"full_name": "Ada"}, headers=finance)
    base = f"/customers/{created.json()['id']}"
    changes = {
        "demands": (
            {"title": "Lease", "description": "Review"},
            {"status": "met", "reason": "done"},
            finance,
        ),
        "progress": ({"project": "p", "stage": "invoiced"}, {"stage": "paid", "reason": "bank"}, admin),
        "payments": (
            {"amount": "12.00", "currency": "EUR", "received_at": "2026-11-20T10:00:00+01:00"},
            {"amount": "21.00", "reason": "typo"},
            finance,
        ),
    }
    for table, (new, change, changer) in changes.items():
        made = await api.post(f"{base}/{table}", json=new, headers=finance)
        assert made.status_code == 201, made.text
        assert made.headers["etag"] == '"1"' and made.json()["version"] == 1
        url = f"{base}/{table}/{made.json()['id']}"

        stale = await api.patch(url, json=change, headers={**changer, "If-Match": '"2"'})
        assert stale.status_code == 412, (table, stale.text)
        assert stale.headers["content-type"] == "application/problem+json"
        assert stale.json()["errors"][0]["field"] == "header.If-Match"
        bad = await api.patch(url, json=change, headers={**changer, "If-Match": "not-a-tag"})
        assert bad.status_code == 412 and bad.json()["errors"][0]["field"] == "header.If-Match"

        changed = await api.patch(url, json=change, headers={**changer, "If-Match": 'W/"1"'})
        assert changed.status_code == 200, (table, changed.text)
        assert changed.headers["etag"] == '"2"' and changed.json()["version"] == 2
        # The list shows each row's version, for the next If-Match.
        listed = (await api.get(f"{base}/{table}", headers=admin)).json()
        assert [row["version"] for row in listed] == [2]
        # Without If-Match the change is made (older clients), and the version moves on.
        again = {**change, "reason": "again", **({"amount": "22.00"} if table == "payments" else {})}
        if table == "demands":
            again["status"] = "withdrawn"
        if table == "progress":
            again["stage"] = "closed"
        plain = await api.patch(url, json=again, headers=changer)
        assert plain.status_code == 200 and plain.headers["etag"] == '"3"', (table, plain.text)

    # The versions are part of the journaled rows: the tables rebuilt from the journal match.
    async with container.uow() as uow:
        live = await snapshot(uow.session)
        await rebuild(uow.session)
        assert differences(live, await snapshot(uow.session)) == []
        await uow.rollback()
