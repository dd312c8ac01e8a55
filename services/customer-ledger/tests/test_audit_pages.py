"""The audit trail paged by cursor: every record once while records are added, the filters kept
in the Link header, each page's read on record, and bad cursors refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from casebridge_shared.testing import TokenMinter
from customer_ledger.bootstrap import Container
from customer_ledger.journal import service as journal
from customer_ledger.records import record_login

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


async def login(container: Container, n: int, at: datetime, outcome: str = "failure") -> int:
    async with container.uow() as uow:
        index = await record_login(
            uow.session,
            {
                "event_id": f"e-{n}",
                "outcome": outcome,
                "user_id": None,
                "email": f"person{n}@example.org",
                "reason": "wrong password" if outcome == "failure" else None,
                "department": None,
                "client_ip": None,
                "user_agent": None,
                "at": at.isoformat(),
            },
        )
        await uow.commit()
    return index


async def walk(
    api: httpx.AsyncClient, headers: dict[str, str], path: str, params: dict[str, Any], between: Any
) -> list[int]:
    """The journal indexes on the pages of ``path``, following ``rel="next"``; ``between`` after each."""
    r = await api.get(path, params=params, headers=headers)
    seen: list[int] = []
    while True:
        assert r.status_code == 200, r.text
        seen += [i["journal_index"] for i in r.json()["items"]]
        await between()
        if "next" not in r.links:
            assert r.json()["next_cursor"] is None
            return seen
        for name, value in params.items():
            if name != "limit":
                assert f"{name}={value}" in r.links["next"]["url"], r.links
        r = await api.get(r.links["next"]["url"], headers=headers)


async def test_logins_walked_by_cursor_each_once_while_logins_arrive(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    # Two failures in the same second: the journal index keeps them apart at a page boundary.
    moments = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
    failures = [await login(container, n, at) for n, at in enumerate(moments * 2)]
    await login(container, 99, T0 + timedelta(minutes=1), outcome="success")
    arrived = 100

    async def another() -> None:
        nonlocal arrived
        arrived += 1
        await login(container, arrived, T0 + timedelta(hours=1, minutes=arrived))  # newest: ahead
        await login(container, arrived + 1000, T0 + timedelta(minutes=1))  # in the middle

    seen = await walk(api, admin, "/audit/logins", {"outcome": "failure", "limit": 3}, another)
    assert len(seen) == len(set(seen))  # none twice
    newest_first = [i for _, i in sorted(zip(moments * 2, failures, strict=True), reverse=True)]
    assert [i for i in seen if i in failures] == newest_first  # every one, in order
    r = await api.get("/audit/logins", params={"outcome": "failure", "limit": 3}, headers=admin)
    assert r.links["first"]["url"] == "/audit/logins?outcome=failure&limit=3"
    # Each page's read is on record with where it started: the cursor's key, not its text.
    r = await api.get(r.links["next"]["url"], headers=admin)
    async with container.db.session() as s:
        last = await journal.entry_at(s, await journal.tree_size(s) - 1)
    read = json.loads(last.body)
    assert read["what"] == "logins" and read["query"]["outcome"] == "failure"
    assert "offset" not in read["query"] and len(read["query"]["after"]) == 2


async def test_changes_and_reads_walked_by_cursor_each_once(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    sales = minter.headers("sales-user", "department", department="sales")
    finance = minter.headers("finance-user", "department", department="finance")

    async def register(headers: dict[str, str], name: str) -> None:
        r = await api.post("/customers", json={"full_name": name, "email": "x@example.org"}, headers=headers)
        assert r.status_code == 201, r.text

    for n in range(5):
        await register(sales, f"Customer {n}")
    await register(finance, "Someone else's")
    everything = (await api.get("/audit/changes", params={"limit": 200}, headers=admin)).json()["items"]
    by_sales = [i["journal_index"] for i in everything if i["department"] == "sales"]

    async def another() -> None:
        await register(sales, "Registered meanwhile")

    seen = await walk(api, admin, "/audit/changes", {"department": "sales", "limit": 2}, another)
    assert seen == by_sales  # each once, newest first; those registered meanwhile are ahead

    # The read records: each page of them is itself a read record (newest, so ahead of the reader).
    reads = (await api.get("/audit/reads", params={"user_id": "admin-1", "limit": 200}, headers=admin)).json()
    before = {(i["journal_index"], i.get("customer_id")) for i in reads["items"]}

    r = await api.get("/audit/reads", params={"user_id": "admin-1", "limit": 1}, headers=admin)
    seen_reads: set[tuple[int, Any]] = set()
    count = 0
    while True:
        assert r.status_code == 200, r.text
        for i in r.json()["items"]:
            seen_reads.add((i["journal_index"], i.get("customer_id")))
            count += 1
        if "next" not in r.links:
            break
        r = await api.get(r.links["next"]["url"], headers=admin)
    assert before <= seen_reads and count == len(seen_reads) and count > len(before) > 1


async def test_bad_cursors_and_limits_on_the_audit_trail(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    for n in range(3):
        await login(container, n, T0 + timedelta(minutes=n))
    logins_cursor = (await api.get("/audit/logins", params={"limit": 1}, headers=admin)).json()["next_cursor"]
    assert logins_cursor
    for path, params, field in [
        ("/audit/logins", {"cursor": "nonsense"}, "query.cursor"),
        ("/audit/logins", {"cursor": logins_cursor, "outcome": "success"}, "query.cursor"),
        ("/audit/changes", {"cursor": logins_cursor}, "query.cursor"),  # another list's
        ("/audit/reads", {"cursor": logins_cursor}, "query.cursor"),
        ("/audit/logins", {"cursor": logins_cursor, "offset": 2}, "query.offset"),
        ("/audit/logins", {"limit": 0}, "query.limit"),
        ("/audit/changes", {"limit": 201}, "query.limit"),
        ("/audit/logins", {"user_id": "a\x00b"}, "query.user_id"),  # PostgreSQL text holds no NUL
        ("/audit/reads.csv", {"customer_id": "\x00"}, "query.customer_id"),
        ("/audit/reads", {"what": "x\x00"}, "query.what"),
        ("/audit/logins", {"email": "\x00@example.org"}, "query.email"),
    ]:
        r = await api.get(path, params=params, headers=admin)
        assert r.status_code == 422, (path, params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == field, (path, params)
    r = await api.get("/audit/logins", params={"cursor": logins_cursor, "limit": 5}, headers=admin)
    assert r.status_code == 200 and len(r.json()["items"]) == 2
    assert r.json()["next_cursor"] is None and set(r.links) == {"first"}
