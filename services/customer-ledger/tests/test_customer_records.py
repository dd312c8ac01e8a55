"""Customer records: the isolation matrix, the hand-off chain, corrections and audit queries (B2-B7)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from casebridge_shared.testing import TokenMinter, count_rows
from customer_ledger.access.models import ChangeRecord, ReadRecord
from customer_ledger.bootstrap import Container
from customer_ledger.journal import service as journal
from customer_ledger.journal.models import JournalEntry
from customer_ledger.records import record_login

DEPARTMENTS = ("sales", "finance", "process", "technical", "after_sales")
TABLES = ("demands", "associations", "progress", "payments")


@dataclass(frozen=True)
class Who:
    name: str
    headers: dict[str, str]
    department: str | None = None
    admin: bool = False


def people(minter: TokenMinter, customer_subject: str) -> list[Who]:
    found = [Who("admin", minter.headers("admin-1", "admin"), admin=True)]
    found += [
        Who(d, minter.headers(f"{d}-user", "department", department=d), department=d) for d in DEPARTMENTS
    ]
    found += [
        Who("staff", minter.headers("staff-1", "staff")),
        Who("supervisor", minter.headers("sup-1", "supervisor")),
        Who("customer", minter.headers(customer_subject, "customer")),
    ]
    return found


async def create_customer(api: httpx.AsyncClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    r = await api.post("/customers", json={"full_name": name, "email": "x@example.org"}, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def grant(api: httpx.AsyncClient, admin: dict[str, str], **body: Any) -> str:
    r = await api.post("/grants", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def expected_read(who: Who, table: str, associated: set[str], grants: dict[tuple[str, str], str]) -> int:
    """The rules, stated apart from the code: admin all; a department by grant and association."""
    if who.admin:
        return 200
    if who.department is None:
        return 403
    scope = grants.get((who.department, table))
    if scope is None:
        return 403
    return 200 if scope == "all" or who.department in associated else 404


async def test_isolation_matrix_every_reader_every_table_with_and_without_grants(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    sales = minter.headers("sales-user", "department", department="sales")
    finance = minter.headers("finance-user", "department", department="finance")
    # Customer A is sales's; customer B was registered by finance.
    a = await create_customer(api, sales, "Ada Customer")
    b = await create_customer(api, finance, "Bo Customer")
    associated = {a["id"]: {"sales"}, b["id"]: {"finance"}}
    everyone = people(minter, a["id"])

    async def check(grants: dict[tuple[str, str], str]) -> int:
        checked = 0
        for who in everyone:
            for customer in (a, b):
                cid = customer["id"]
                r = await api.get(f"/customers/{cid}", headers=who.headers)
                want = expected_read(who, "customers", associated[cid], grants)
                assert r.status_code == want, (who.name, "customers", cid, r.text)
                if want != 200:
                    assert r.headers["content-type"] == "application/problem+json"
                for table in TABLES:
                    r = await api.get(f"/customers/{cid}/{table}", headers=who.headers)
                    want = expected_read(who, table, associated[cid], grants)
                    assert r.status_code == want, (who.name, table, cid, r.text)
                    checked += 1
            # The list shows exactly the customers the reader may see.
            r = await api.get("/customers", headers=who.headers)
            scope = grants.get((who.department or "", "customers"))
            if who.admin or scope == "all":
                assert r.status_code == 200 and r.json()["total"] == 2, who.name
            elif scope == "associated":
                ids = {c["id"] for c in r.json()["items"]}
                assert ids == {c for c, depts in associated.items() if who.department in depts}, who.name
            else:
                assert r.status_code == 403, who.name
            # Access records and grants are admin's alone.
            for path in ("/audit/logins", "/audit/changes", "/audit/reads", "/grants", "/ledger/entries"):
                r = await api.get(path, headers=who.headers)
                assert r.status_code == (200 if who.admin else 403), (who.name, path)
        return checked

    assert await check({}) > 0  # deny by default: no grant, no department reads anything

    grants = {
        ("sales", "customers"): "associated",
        ("sales", "demands"): "associated",
        ("finance", "customers"): "all",
        ("finance", "payments"): "associated",
        ("finance", "progress"): "all",
        ("after_sales", "associations"): "associated",
    }
    ids = {}
    for (department, table), scope in grants.items():
        ids[(department, table)] = await grant(api, admin, department=department, table=table, scope=scope)
    await check(grants)

    # A revoke is effective on the next request.
    r = await api.delete(
        f"/grants/{ids[('finance', 'customers')]}", headers=admin, params={"reason": "audit"}
    )
    assert r.status_code == 204
    del grants[("finance", "customers")]
    await check(grants)
    r = await api.delete(f"/grants/{ids[('finance', 'customers')]}", headers=admin)
    assert r.status_code == 404

    # Every answered read is on record, with the customer it showed; refusals read nothing.
    async with container.db.session() as s:
        reads = (await s.execute(select(ReadRecord).where(ReadRecord.what == "demands"))).scalars().all()
    shown = {(r.reader, r.customer_id) for r in reads}
    assert ("sales-user", a["id"]) in shown and ("sales-user", b["id"]) not in shown
    assert ("admin-1", b["id"]) in shown and not any(r.reader == "staff-1" for r in reads)


async def test_field_grants_show_only_the_granted_fields(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    admin = minter.headers("admin-1", "admin")
    technical = minter.headers("tech-user", "department", department="technical")
    c = await create_customer(api, admin, "Cy Customer")
    r = await api.post(
        f"/customers/{c['id']}/associations",
        json={"department": "technical", "reason": "support"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    await grant(api, admin, department="technical", table="customers", fields=["full_name", "stage"])
    r = await api.get(f"/customers/{c['id']}", headers=technical)
    assert r.status_code == 200 and set(r.json()) == {"id", "full_name", "stage"}
    # A second grant on the same table widens what is shown.
    await grant(api, admin, department="technical", table="customers", fields=["email"])
    r = await api.get(f"/customers/{c['id']}", headers=technical)
    assert set(r.json()) == {"id", "full_name", "stage", "email"}
    r = await api.post(
        "/grants", json={"department": "technical", "table": "customers", "fields": ["email"]}, headers=admin
    )
    assert r.status_code == 409


async def test_writes_follow_the_rules_of_each_department(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    sales = minter.headers("sales-user", "department", department="sales")
    a = await create_customer(api, sales, "Ada Customer")
    # Every department is associated, so only the per-table rules decide.
    for d in DEPARTMENTS[1:]:
        r = await api.post(f"/customers/{a['id']}/associations", json={"department": d}, headers=admin)
        assert r.status_code == 201, r.text
    r = await api.post(f"/customers/{a['id']}/associations", json={"department": "finance"}, headers=admin)
    assert r.status_code == 409
    other = await create_customer(api, admin, "Unassociated Customer")  # held by sales by default
    r = await api.delete(
        f"/customers/{other['id']}/associations/sales", params={"reason": "moved away"}, headers=admin
    )
    assert r.status_code == 204

    payment = {"amount": "120.50", "currency": "EUR", "received_at": "2026-11-20T10:00:00+01:00"}
    writes = {
        "demands": {"title": "Trademark check", "description": "Before launch"},
        "progress": {"project": "trademark", "stage": "filed", "note": "with the office"},
        "payments": payment,
    }
    allowed = {"demands": set(DEPARTMENTS), "progress": {"finance", "process"}, "payments": {"finance"}}
    for who in people(minter, a["id"]):
        for table, body in writes.items():
            for customer, is_associated in ((a, True), (other, False)):
                r = await api.post(f"/customers/{customer['id']}/{table}", json=body, headers=who.headers)
                if who.admin:
                    want = 201
                elif who.department is None:
                    want = 403
                elif not is_associated:
                    want = 404
                else:
                    want = 201 if who.department in allowed[table] else 403
                assert r.status_code == want, (who.name, table, r.text)
        r = await api.post(
            f"/customers/{a['id']}/associations", json={"department": "sales"}, headers=who.headers
        )
        assert r.status_code == (409 if who.admin else 403), who.name
        r = await api.post("/grants", json={"department": "sales", "table": "payments"}, headers=who.headers)
        assert r.status_code == (201 if who.admin else 403), who.name

    # Each successful write is one change record, with who and the row written.
    async with container.db.session() as s:
        changes = (
            (await s.execute(select(ChangeRecord).where(ChangeRecord.table == "payments"))).scalars().all()
        )
    assert sorted(c.changed_by for c in changes) == ["admin-1", "admin-1", "finance-user"]
    assert all(c.operation == "insert" and c.before is None and c.after for c in changes)
    assert {c.after["amount"] for c in changes if c.after} == {"120.50"}


async def test_bad_input_is_refused_with_the_field_and_nothing_written(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    finance = minter.headers("finance-user", "department", department="finance")
    c = await create_customer(api, finance, "Ada Customer")
    entries = await count_rows(container.db, JournalEntry)
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], int, str]] = [
        ("POST", "/customers", {"full_name": ""}, finance, 422, "full_name"),
        ("POST", "/customers", {"full_name": "A", "email": "not-an-email"}, finance, 422, "email"),
        ("POST", "/customers", {"full_name": "A", "vip": True}, finance, 422, "vip"),
        ("PATCH", f"/customers/{c['id']}", {"phone": "1"}, finance, 422, "reason"),
        (
            "POST",
            f"/customers/{c['id']}/payments",
            {"amount": "1.005", "currency": "EUR", "received_at": "2026-11-20T10:00:00Z"},
            finance,
            422,
            "amount",
        ),
        (
            "POST",
            f"/customers/{c['id']}/payments",
            {"amount": "-5", "currency": "EUR", "received_at": "2026-11-20T10:00:00Z"},
            finance,
            422,
            "amount",
        ),
        (
            "POST",
            f"/customers/{c['id']}/payments",
            {"amount": "5", "currency": "EUR", "received_at": "2026-11-20T10:00:00"},
            finance,
            422,
            "zone",
        ),
        ("POST", f"/customers/{c['id']}/handoff", {"to": "legal"}, finance, 422, "to"),
        ("POST", "/customers/nope/demands", {"title": "t", "description": "d"}, finance, 404, "nope"),
        ("POST", "/grants", {"table": "customers"}, admin, 422, "grantee"),
        (
            "POST",
            "/grants",
            {"department": "sales", "customer_id": "x", "table": "progress"},
            admin,
            422,
            "grantee",
        ),
        ("POST", "/grants", {"customer_id": "x", "table": "payments"}, admin, 422, "progress"),
        (
            "POST",
            "/grants",
            {"department": "sales", "table": "customers", "fields": ["salary"]},
            admin,
            422,
            "salary",
        ),
        ("POST", "/grants", {"department": "sales", "table": "journal"}, admin, 422, "table"),
        (
            "POST",
            "/grants",
            {"department": "sales", "table": "customers", "scope": "some"},
            admin,
            422,
            "scope",
        ),
        ("GET", "/audit/changes", {"table": "secrets"}, admin, 422, "table"),
        (
            "PATCH",
            f"/customers/{c['id']}/demands/nope",
            {"status": "met", "reason": "r"},
            finance,
            404,
            "nope",
        ),
        ("POST", f"/customers/{c['id']}/demands", {"title": "t"}, finance, 422, "description"),
        ("POST", f"/customers/{c['id']}/progress", {"project": "p", "stage": ""}, finance, 422, "stage"),
        ("POST", f"/customers/{c['id']}/associations", {"department": "legal"}, admin, 422, "department"),
        ("DELETE", f"/customers/{c['id']}/associations/finance", {}, admin, 422, "reason"),
        (
            "POST",
            "/grants",
            {"department": "sales", "table": "customers", "fields": []},
            admin,
            422,
            "fields",
        ),
    ]
    for method, path, body, headers, status, mentioned in cases:
        if method in ("GET", "DELETE"):
            r = await api.request(method, path, params=body, headers=headers)
        else:
            r = await api.request(method, path, json=body, headers=headers)
        assert r.status_code == status, (path, body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert mentioned in r.text, (path, r.text)
    assert (await api.post("/customers", json={"full_name": "A"})).status_code == 401
    assert await count_rows(container.db, JournalEntry) == entries  # nothing half-written, nothing read


async def test_hand_off_chain_end_to_end_with_every_change_and_read_on_record(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    h = {d: minter.headers(f"{d}-user", "department", department=d) for d in DEPARTMENTS}
    for d in DEPARTMENTS:
        await grant(api, admin, department=d, table="customers")
    c = await create_customer(api, h["sales"], "Ada Customer")
    cid = c["id"]
    assert c["stage"] == "sales"

    async def hand_off(who: str, status: int = 200, **body: Any) -> dict[str, Any]:
        r = await api.post(
            f"/customers/{cid}/handoff", json=body, headers=h[who] if who != "admin" else admin
        )
        assert r.status_code == status, (who, body, r.text)
        return dict(r.json())

    # Before the hand-off, finance does not see the customer.
    assert (await api.get(f"/customers/{cid}", headers=h["finance"])).status_code == 404
    await hand_off("finance", 404)  # not associated yet: as if absent
    await hand_off("sales", 403, to="process")  # a skip needs admin
    assert (await hand_off("sales"))["stage"] == "finance"
    assert (await api.get(f"/customers/{cid}", headers=h["finance"])).status_code == 200
    await hand_off("sales", 403)  # sales no longer holds the customer
    r = await api.post(
        f"/customers/{cid}/payments",
        json={
            "amount": "300",
            "currency": "EUR",
            "received_at": "2026-11-25T09:00:00Z",
            "reference": "INV-1",
        },
        headers=h["finance"],
    )
    assert r.status_code == 201, r.text
    assert (await hand_off("finance"))["stage"] == "process"
    r = await api.post(
        f"/customers/{cid}/progress", json={"project": "trademark", "stage": "filed"}, headers=h["process"]
    )
    assert r.status_code == 201, r.text
    assert (await hand_off("process", reason="filing done"))["stage"] == "technical"
    assert (await hand_off("technical"))["stage"] == "after_sales"
    await hand_off("after_sales", 409)  # the end of the chain
    # Backwards is admin's, with a reason, and is recorded like any change.
    assert (await hand_off("admin", to="finance", reason="refund requested"))["stage"] == "finance"

    # The customer asks for a correction of their phone number: admin corrects it with the feedback reference.
    r = await api.patch(
        f"/customers/{cid}",
        json={"phone": "+43 1 234", "reason": "customer called: wrong number", "feedback_ref": "FB-77"},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["phone"] == "+43 1 234" and r.json()["version"] == 7

    r = await api.get("/audit/changes", params={"customer_id": cid, "limit": 200}, headers=admin)
    assert r.status_code == 200, r.text
    changes = list(reversed(r.json()["items"]))  # oldest first
    stages = [
        (ch["before"]["stage"], ch["after"]["stage"])
        for ch in changes
        if ch["table"] == "customers"
        and ch["operation"] == "update"
        and ch["before"]["stage"] != ch["after"]["stage"]
    ]
    assert stages == [
        ("sales", "finance"),
        ("finance", "process"),
        ("process", "technical"),
        ("technical", "after_sales"),
        ("after_sales", "finance"),
    ]
    associations = [ch["after"]["department"] for ch in changes if ch["table"] == "associations"]
    assert associations == ["sales", "finance", "process", "technical", "after_sales"]
    correction = changes[-1]
    assert correction["before"]["phone"] is None and correction["after"]["phone"] == "+43 1 234"
    assert correction["reason"] == "customer called: wrong number" and correction["feedback_ref"] == "FB-77"
    assert correction["changed_by"] == "admin-1" and correction["department"] is None
    by_process = await api.get("/audit/changes", params={"department": "process"}, headers=admin)
    assert {ch["changed_by"] for ch in by_process.json()["items"]} == {"process-user"}
    assert any(ch["reason"] == "filing done" for ch in by_process.json()["items"])

    # Reads: finance's look at the customer is on record; so is admin's look at the changes.
    r = await api.get("/audit/reads", params={"customer_id": cid, "department": "finance"}, headers=admin)
    assert r.status_code == 200 and r.json()["total"] == 1
    r = await api.get("/audit/reads", params={"user_id": "admin-1", "what": "change records"}, headers=admin)
    assert r.json()["total"] >= 1

    # Every change, read and login is a journal entry whose leaf the public proofs cover.
    async with container.db.session() as s:
        size = await journal.tree_size(s)
        kinds = [e.kind for e in (await s.execute(select(JournalEntry))).scalars()]
    assert size == len(kinds) and set(kinds) == {"change", "read"}
    entry = json.loads((await api.get(f"/ledger/entries/{size - 1}", headers=admin)).json()["entry"])
    assert entry["type"] == "read"
    r = await api.get("/ledger/proofs/inclusion", params={"index": 0, "tree_size": size})
    assert r.status_code == 200


@pytest.mark.parametrize("role", ["staff", "supervisor", "service"])
async def test_staff_without_a_department_cannot_register_or_change_customers(
    api: httpx.AsyncClient, minter: TokenMinter, role: str
) -> None:
    r = await api.post("/customers", json={"full_name": "A"}, headers=minter.headers("u-1", role))
    assert r.status_code == 403


async def test_one_journal_entry_is_served_to_whoever_may_see_that_record_in_full(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    sales = minter.headers("sales-user", "department", department="sales")
    finance = minter.headers("finance-user", "department", department="finance")
    technical = minter.headers("tech-user", "department", department="technical")
    a = await create_customer(api, sales, "Ada Customer")
    me = minter.headers(a["id"], "customer")
    r = await api.post(
        f"/customers/{a['id']}/progress", json={"project": "p", "stage": "filed"}, headers=admin
    )
    assert r.status_code == 201
    async with container.db.session() as s:
        rows = (await s.execute(select(ChangeRecord).order_by(ChangeRecord.journal_index))).scalars().all()
    created = next(c.journal_index for c in rows if c.table == "customers")
    progress = next(c.journal_index for c in rows if c.table == "progress")

    def entry(index: int, headers: dict[str, str]) -> Any:
        return api.get(f"/ledger/entries/{index}", headers=headers)

    assert (await entry(created, sales)).status_code == 403  # no grant yet
    await grant(api, admin, department="sales", table="customers")
    await grant(api, admin, department="finance", table="customers")
    await grant(api, admin, department="technical", table="customers", scope="all", fields=["full_name"])
    r = await entry(created, sales)
    assert r.status_code == 200 and json.loads(r.json()["entry"])["after"]["full_name"] == "Ada Customer"
    assert (await entry(created, finance)).status_code == 404  # not finance's customer
    assert (await entry(created, technical)).status_code == 403  # a field grant never shows a whole entry
    assert (await entry(progress, sales)).status_code == 403  # no grant on progress
    assert (await entry(progress, me)).status_code == 403  # not yet opened to the customer
    await grant(api, admin, customer_id=a["id"], table="progress")
    assert (await entry(progress, me)).status_code == 200
    assert (await entry(created, me)).status_code == 403
    async with container.db.session() as s:
        size = await journal.tree_size(s)
    read = size - 1  # the customer's read just now: an access record
    assert (await entry(read, sales)).status_code == 403
    assert (await entry(read, minter.headers("staff-1", "staff"))).status_code == 403
    assert (await entry(read, admin)).status_code == 200
    assert (await entry(10_000, admin)).status_code == 404
    assert (await api.get("/ledger/entries", headers=sales)).status_code == 403  # the bulk copy is admin's
    r = await api.get(
        "/audit/reads", params={"what": "journal entry", "user_id": "sales-user"}, headers=admin
    )
    assert r.json()["total"] == 1 and r.json()["items"][0]["customer_id"] == a["id"]


async def test_admin_corrects_access_records_which_stay_as_journaled(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    sales = minter.headers("sales-user", "department", department="sales")
    async with container.uow() as uow:
        login = await record_login(
            uow.session,
            {
                "event_id": "e-1",
                "outcome": "failure",
                "user_id": None,
                "email": "ada@example.org",
                "reason": "wrong password",
                "department": None,
                "client_ip": "10.0.0.1",
                "user_agent": None,
                "at": "2026-11-20T10:00:00+00:00",
            },
        )
        await uow.commit()
    async with container.db.session() as s:
        original = (await journal.entry_at(s, login)).body

    fix = {"corrected": {"client_ip": "203.0.113.9"}, "reason": "proxy address, not the customer's"}
    path = f"/audit/records/{login}/corrections"
    assert (await api.post(path, json=fix, headers=sales)).status_code == 403
    r = await api.post(path, json={**fix, "corrected": {"password": "x"}}, headers=admin)
    assert r.status_code == 422 and "password" in r.text
    r = await api.post(path, json={"corrected": {}, "reason": "x"}, headers=admin)
    assert r.status_code == 422 and "corrected" in r.text
    assert (await api.post("/audit/records/99999/corrections", json=fix, headers=admin)).status_code == 404
    r = await api.post(path, json={**fix, "feedback_ref": "FB-9"}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["record"] == "login" and r.json()["corrected_by"] == "admin-1"

    r = await api.get("/audit/logins", headers=admin)
    [item] = r.json()["items"]
    assert item["client_ip"] == "10.0.0.1"  # as journaled
    [correction] = item["corrections"]
    assert correction["corrected"] == {"client_ip": "203.0.113.9"} and correction["feedback_ref"] == "FB-9"
    async with container.db.session() as s:
        assert (await journal.entry_at(s, login)).body == original
        last = await journal.entry_at(s, correction["journal_index"])
    assert last.kind == "correction" and json.loads(last.body)["of_index"] == login

    # A change record and a read record can be corrected too.
    c = await create_customer(api, sales, "Ada Customer")
    r = await api.get("/audit/changes", params={"customer_id": c["id"]}, headers=admin)
    change = r.json()["items"][-1]["journal_index"]
    r = await api.post(
        f"/audit/records/{change}/corrections",
        json={"corrected": {"reason": "registered at the fair"}, "reason": "reason was missing"},
        headers=admin,
    )
    assert r.status_code == 201 and r.json()["record"] == "change"
    r = await api.get("/audit/changes", params={"customer_id": c["id"]}, headers=admin)
    assert [len(i["corrections"]) for i in r.json()["items"]][-1] == 1


async def test_payments_and_progress_are_corrected_with_a_reason_and_the_before_kept(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    finance = minter.headers("finance-user", "department", department="finance")
    sales = minter.headers("sales-user", "department", department="sales")
    c = await create_customer(api, finance, "Ada Customer")
    base = f"/customers/{c['id']}"
    r = await api.post(
        f"{base}/payments",
        json={"amount": "300", "currency": "EUR", "received_at": "2026-11-25T09:00:00Z"},
        headers=finance,
    )
    payment = r.json()["id"]
    r = await api.post(f"{base}/progress", json={"project": "p", "stage": "filed"}, headers=finance)
    entry = r.json()["id"]

    fix = {"amount": "30", "reason": "typo: one zero too many", "feedback_ref": "FB-3"}
    assert (await api.patch(f"{base}/payments/{payment}", json=fix, headers=sales)).status_code == 404
    r = await api.patch(f"{base}/payments/{payment}", json={"amount": "30"}, headers=finance)
    assert r.status_code == 422 and "reason" in r.text
    r = await api.patch(f"{base}/payments/{payment}", json={**fix, "amount": "30.001"}, headers=finance)
    assert r.status_code == 422 and "amount" in r.text
    assert (await api.patch(f"{base}/payments/nope", json=fix, headers=finance)).status_code == 404
    r = await api.patch(f"{base}/payments/{payment}", json=fix, headers=finance)
    assert r.status_code == 200 and r.json()["amount"] == "30.00", r.text

    r = await api.patch(f"{base}/progress/{entry}", json={"stage": "granted", "reason": "r"}, headers=finance)
    assert r.status_code == 403  # departments add progress; admin corrects it
    r = await api.patch(
        f"{base}/progress/{entry}", json={"stage": "granted", "reason": "office confirmed"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["stage"] == "granted"

    r = await api.get("/audit/changes", params={"customer_id": c["id"], "table": "payments"}, headers=admin)
    update = r.json()["items"][0]
    assert update["operation"] == "update" and update["before"]["amount"] == "300.00"
    assert update["after"]["amount"] == "30.00" and update["feedback_ref"] == "FB-3"
    r = await api.get("/audit/changes", params={"customer_id": c["id"], "table": "progress"}, headers=admin)
    update = r.json()["items"][0]
    assert (update["before"]["stage"], update["after"]["stage"]) == ("filed", "granted")
    assert update["after"]["at"] == update["before"]["at"]  # when it was recorded stays


async def test_null_in_a_field_that_cannot_be_empty_is_a_422_and_nothing_written(
    api: httpx.AsyncClient, container: Container, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    c = await create_customer(api, admin, "Ada Customer")
    base = f"/customers/{c['id']}"
    r = await api.post(f"{base}/demands", json={"title": "t", "description": "d"}, headers=admin)
    demand = r.json()
    entry = (await api.post(f"{base}/progress", json={"project": "p", "stage": "f"}, headers=admin)).json()
    payment = (
        await api.post(
            f"{base}/payments",
            json={"amount": "300", "currency": "EUR", "received_at": "2026-11-25T09:00:00Z"},
            headers=admin,
        )
    ).json()
    entries = await count_rows(container.db, JournalEntry)
    cases = [
        (base, "full_name"),
        (f"{base}/demands/{demand['id']}", "title"),
        (f"{base}/demands/{demand['id']}", "description"),
        (f"{base}/demands/{demand['id']}", "status"),
        (f"{base}/progress/{entry['id']}", "project"),
        (f"{base}/progress/{entry['id']}", "stage"),
        (f"{base}/payments/{payment['id']}", "amount"),
        (f"{base}/payments/{payment['id']}", "received_at"),
    ]
    for path, field in cases:
        r = await api.patch(path, json={field: None, "reason": "r"}, headers=admin)
        assert r.status_code == 422, (path, field, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == f"body.{field}", r.text
    assert await count_rows(container.db, JournalEntry) == entries
    # Fields whose column may be empty still take null (it clears them).
    r = await api.patch(base, json={"phone": None, "email": None, "reason": "r"}, headers=admin)
    assert r.status_code == 200 and r.json()["email"] is None, r.text


async def test_the_customer_list_answers_the_page_its_openapi_documents(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    await create_customer(api, admin, "Ada Customer")
    page = (await api.get("/customers", headers=admin)).json()
    assert set(page) == {"items", "total", "limit", "offset"} and page["total"] == 1
    spec = (await api.get("/openapi.json")).json()
    documented = spec["paths"]["/customers"]["get"]["responses"]["200"]["content"]["application/json"]
    ref = documented["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(spec["components"]["schemas"][ref]["required"]) == {"items", "total", "limit", "offset"}


async def test_integers_beyond_64_bits_are_a_422_not_a_500(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    huge = "99999999999999999999"
    for path, field in (
        (f"/ledger/entries/{huge}", "path.index"),
        (f"/ledger/entries?start={huge}", "query.start"),
        (f"/customers?offset={huge}", "query.offset"),
        (f"/audit/logins?offset={2**63 - 1}", "query.offset"),  # fits SQL, not the journal's JSON
        (f"/ledger/proofs/inclusion?index={huge}&tree_size=1", "query.index"),
    ):
        r = await api.get(path, headers=admin)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["field"] == field, r.text


async def test_reads_shaped_by_field_grants_match_the_documented_schema(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    import schemathesis
    from schemathesis.specs.openapi.checks import response_schema_conformance

    admin = minter.headers("admin-1", "admin")
    sales = minter.headers("sales-user", "department", department="sales")
    c = await create_customer(api, sales, "Ada Customer")
    base = f"/customers/{c['id']}"
    r = await api.post(f"{base}/demands", json={"title": "t", "description": "d"}, headers=sales)
    assert r.status_code == 201, r.text
    for table, fields in (("customers", ["email"]), ("demands", ["status"])):
        await grant(api, admin, department="sales", table=table, fields=fields)
    schema = schemathesis.openapi.from_dict((await api.get("/openapi.json")).json())
    for path, template, params in (
        ("/customers", "/customers", {}),
        (base, "/customers/{customer_id}", {"customer_id": c["id"]}),
        (f"{base}/demands", "/customers/{customer_id}/demands", {"customer_id": c["id"]}),
    ):
        r = await api.get(path, headers=sales)
        assert r.status_code == 200, r.text
        case = schema[template]["GET"].Case(path_parameters=params)
        case.validate_response(r, checks=[response_schema_conformance])
    assert "full_name" not in (await api.get(base, headers=sales)).json()
