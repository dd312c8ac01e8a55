"""Concurrent api requests share write transactions; the journal and its views stay exact."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import event

from casebridge_shared.auth import Department, Principal, Role
from casebridge_shared.testing import TokenMinter
from customer_ledger.bootstrap import Container
from customer_ledger.customers import service as customers
from customer_ledger.customers.models import CustomerCreate, ProgressCreate
from customer_ledger.journal import service as journal
from customer_ledger.records import differences, rebuild, snapshot

ADMIN = Principal(subject="admin-1", roles=frozenset({Role.ADMIN}))
FINANCE = Principal(subject="finance-user", roles=frozenset({Role.DEPARTMENT}), department=Department.FINANCE)


def count_statements(container: Container) -> Counter[str]:
    """Statements the writer sends, by verb and table (``INSERT project_progress``)."""
    seen: Counter[str] = Counter()

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.split()
        verb = words[0].upper()
        table = words[2] if verb in ("INSERT", "DELETE") else words[1] if verb == "UPDATE" else ""
        seen[f"{verb} {table}".strip()] += 1

    event.listen(container.db.writer_engine.sync_engine, "before_cursor_execute", note)
    return seen


async def test_concurrent_requests_are_journaled_exactly_and_share_transactions(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    finance = minter.headers("finance-user", "department", department="finance")
    admin = minter.headers("admin-1", "admin")
    r = await api.post(
        "/grants", json={"department": "finance", "table": "progress", "scope": "associated"}, headers=admin
    )
    assert r.status_code == 201, r.text
    ids = []
    for name in ("Ada", "Bo", "Cy"):
        r = await api.post("/customers", json={"full_name": name}, headers=finance)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    async with container.db.session() as session:
        before = await journal.tree_size(session)

    def post(customer: str, n: int) -> Any:
        return api.post(
            f"/customers/{customer}/progress", json={"project": "p", "stage": f"step {n}"}, headers=finance
        )

    # Only writes: shared transactions, and each table's rows in one insert per transaction.
    statements = count_statements(container)
    transactions = container.writes.transactions
    answers = await asyncio.gather(*(post(ids[n % 3], n) for n in range(24)))
    assert [a.status_code for a in answers] == [201] * 24
    used = container.writes.transactions - transactions
    assert used < 24
    assert statements["INSERT project_progress"] == used
    assert statements["INSERT change_records"] == used
    assert statements["INSERT journal_entries"] == used
    assert statements["UPDATE journal_head"] == used

    # Mixed: a request failing in the middle of a batch, and a read (journaled too).
    requests = [post(ids[n % 3], n) for n in range(24, 48)]
    requests.insert(7, post("no-such-customer", 99))
    requests.insert(12, api.get(f"/customers/{ids[0]}/progress", headers=finance))
    answers = await asyncio.gather(*requests)
    assert [a.status_code for a in answers].count(201) == 24
    assert answers[7].status_code == 404
    assert answers[7].headers["content-type"] == "application/problem+json"
    assert answers[12].status_code == 200
    # The read saw exactly the progress of the requests before it, as if they had run one by one.
    seen = {row["stage"] for row in answers[12].json()}
    assert seen == {f"step {n}" for n in range(0, 24, 3)} | {
        f"step {n}" for n in range(24, 24 + 11) if n % 3 == 0
    }
    async with container.db.session() as session:
        assert await journal.tree_size(session) == before + 48 + 1
        live = await snapshot(session)
    assert len(live["project_progress"]) == 48
    async with container.uow() as uow:
        await rebuild(uow.session)
        rebuilt = await snapshot(uow.session)
    assert differences(live, rebuilt) == []


async def test_queued_view_rows_are_seen_by_a_later_query_in_the_same_transaction(
    container: Container,
) -> None:
    async with container.uow() as uow:
        customer = await customers.create_customer(
            uow.session, FINANCE, CustomerCreate(full_name="Ada"), default_department="sales"
        )
        await uow.commit()
    async with container.uow() as uow:
        entry = await customers.add_progress(
            uow.session, FINANCE, customer.id, ProgressCreate(project="p", stage="first")
        )
        # Not written yet: queued with the journal's rows ...
        rows = await customers.list_of_customer(uow.session, ADMIN, customer.id, "progress")
        # ... until this query of the table, which writes them first.
        assert [r["id"] for r in rows] == [entry.id]
        await uow.rollback()
    async with container.db.session() as session:
        assert (await snapshot(session))["project_progress"] == []
