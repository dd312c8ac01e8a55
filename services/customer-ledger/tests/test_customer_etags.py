"""A customer's ETag: its version on reads, If-Match on changes, If-None-Match on reads (issue 27)."""

from __future__ import annotations

import httpx

from casebridge_shared.testing import TokenMinter


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
