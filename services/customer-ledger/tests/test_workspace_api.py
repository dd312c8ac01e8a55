"""The API the workspace pages need (issue 26 §3): ``GET /me/permissions`` (what to offer), the
audit trail as CSV (journaled like every read), and the page's files under the page policy."""

from __future__ import annotations

import csv
import io
import json

import httpx
from sqlalchemy import select

from casebridge_shared.testing import TokenMinter, count_rows
from customer_ledger.access.csv_export import cell
from customer_ledger.access.models import ReadRecord
from customer_ledger.bootstrap import Container
from customer_ledger.journal.models import JournalEntry


async def test_permissions_follow_roles_departments_and_the_grants_in_force(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin", email="admin@example.org")
    finance = minter.headers("fin-1", "department", department="finance", name="Fay")
    sales = minter.headers("sales-1", "department", department="sales")
    after_sales = minter.headers("as-1", "department", department="after_sales")

    r = await api.get("/me/permissions", headers=admin)
    assert r.status_code == 200, r.text
    mine = r.json()
    assert mine["admin"] and mine["grants"] and mine["audit"]
    assert set(mine["read"]) == {"customers", "demands", "associations", "progress", "payments"}
    assert all(mine["write"].values())
    assert mine["hand_off_chain"] == ["sales", "finance", "process", "technical", "after_sales"]

    # No grant yet: a department reads nothing, writes what its department may.
    fin = (await api.get("/me/permissions", headers=finance)).json()
    assert fin["department"] == "finance" and fin["name"] == "Fay"
    assert fin["read"] == {} and not fin["grants"] and not fin["audit"]
    assert fin["write"] == {
        "register_customers": True,
        "change_customers": True,
        "demands": True,
        "progress": True,
        "payments": True,
        "hand_off": True,
        "correct_progress": False,
        "associations": False,
    }
    sal = (await api.get("/me/permissions", headers=sales)).json()
    assert not sal["write"]["payments"] and not sal["write"]["progress"] and sal["write"]["demands"]
    # After-sales is the end of the chain: nobody to hand on to.
    assert not (await api.get("/me/permissions", headers=after_sales)).json()["write"]["hand_off"]

    # Grants add up as the API applies them: any "all" wins, field lists are united.
    for body in (
        {"department": "finance", "table": "customers", "scope": "associated", "fields": ["full_name"]},
        {"department": "finance", "table": "customers", "scope": "all", "fields": ["stage"]},
        {"department": "finance", "table": "payments"},
    ):
        assert (await api.post("/grants", json=body, headers=admin)).status_code == 201
    fin = (await api.get("/me/permissions", headers=finance)).json()
    assert fin["read"] == {
        "customers": {"scope": "all", "fields": ["full_name", "stage"]},
        "payments": {"scope": "associated", "fields": None},
    }
    # A revoke is seen on the next request.
    grants = (await api.get("/grants", params={"table": "payments"}, headers=admin)).json()
    assert (await api.delete(f"/grants/{grants[0]['id']}", headers=admin)).status_code == 204
    assert "payments" not in (await api.get("/me/permissions", headers=finance)).json()["read"]

    # Staff and customers have no rights here; without a token it is a 401 problem.
    staff = (await api.get("/me/permissions", headers=minter.headers("st-1", "staff"))).json()
    assert staff["read"] == {} and not any(staff["write"].values())
    r = await api.get("/me/permissions")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


async def test_an_auditor_reads_the_trail_and_the_journal_and_no_customer_record(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    admin = minter.headers("admin-1", "admin")
    auditor = minter.headers("aud-1", "auditor", name="Avery")
    r = await api.post("/customers", json={"full_name": "Lin Wei"}, headers=admin)
    assert r.status_code == 201, r.text
    customer_id = r.json()["id"]

    me = (await api.get("/me/permissions", headers=auditor)).json()
    assert me["audit"] is True and me["admin"] is False and me["grants"] is False
    assert me["read"] == {} and not any(me["write"].values())
    # What the page offers is what the API allows: the trail, its export and the journal ...
    for path in (
        "/audit/changes",
        "/audit/logins",
        "/audit/reads",
        "/audit/changes.csv",
        "/ledger/entries",
        "/ledger/entries/0",
    ):
        r = await api.get(path, headers=auditor)
        assert r.status_code == 200, (path, r.text)
    # ... and no customer record, no grant, no correction.
    for method, path in (
        ("GET", "/customers"),
        ("GET", f"/customers/{customer_id}"),
        ("GET", "/grants"),
        ("POST", "/audit/records/0/corrections"),
    ):
        r = await api.request(method, path, headers=auditor, json={} if method == "POST" else None)
        assert r.status_code == 403, (method, path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_the_audit_trail_exports_as_csv_and_the_export_is_on_record(
    api: httpx.AsyncClient, minter: TokenMinter, container: Container
) -> None:
    admin = minter.headers("admin-1", "admin")
    sales = minter.headers("sales-1", "department", department="sales")
    r = await api.post(
        "/customers", json={"full_name": '=HYPERLINK("x")', "email": "a@example.org"}, headers=sales
    )
    assert r.status_code == 201, r.text
    customer_id = r.json()["id"]
    r = await api.patch(
        f"/customers/{customer_id}", json={"phone": "+49 30 1234", "reason": "called"}, headers=sales
    )
    assert r.status_code == 200, r.text

    r = await api.get("/audit/changes.csv", params={"customer_id": customer_id}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="change-records-export.csv"' in r.headers["content-disposition"]
    assert r.headers["x-total-count"] == "3"  # the customer, the association, the phone change
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["table"] for row in rows] == ["customers", "associations", "customers"]
    change = rows[0]
    assert change["operation"] == "update" and change["reason"] == "called"
    assert json.loads(change["after"])["phone"] == "+49 30 1234"
    assert json.loads(change["before"])["phone"] is None
    # A name that is a spreadsheet formula is written as text (CSV injection).
    assert json.loads(rows[2]["after"])["full_name"] == '=HYPERLINK("x")'
    assert cell('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert cell(None) == "" and cell({"b": 1, "a": 2}) == '{"a":2,"b":1}'

    # The export itself is a read on record, naming the admin, the query and the customers.
    async with container.db.session() as s:
        reads = (
            (await s.execute(select(ReadRecord).where(ReadRecord.what == "change records export")))
            .scalars()
            .all()
        )
        assert len(reads) == 1 and reads[0].customer_id == customer_id and reads[0].reader == "admin-1"
        entry = await s.get(JournalEntry, reads[0].journal_index)
        assert entry is not None
        assert json.loads(entry.body)["query"]["customer_id"] == customer_id

    for kind, first_column in (("logins", "journal_index"), ("reads", "journal_index")):
        r = await api.get(f"/audit/{kind}.csv", headers=admin)
        assert r.status_code == 200, r.text
        assert r.text.split("\r\n", 1)[0].split(",")[0] == first_column
    reads = list(csv.DictReader(io.StringIO((await api.get("/audit/reads.csv", headers=admin)).text)))
    assert "change records export" in {row["what"] for row in reads}


async def test_csv_exports_refuse_bad_input_and_non_admins_and_record_nothing(
    api: httpx.AsyncClient, minter: TokenMinter, container: Container
) -> None:
    before = await count_rows(container.db, JournalEntry)
    sales = minter.headers("sales-1", "department", department="sales")
    r = await api.get("/audit/changes.csv", headers=sales)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert (await api.get("/audit/logins.csv")).status_code == 401
    admin = minter.headers("admin-1", "admin")
    for params, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"department": "marketing"}, "department"),
    ):
        r = await api.get("/audit/reads.csv", params=params, headers=admin)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["errors"][0]["field"].endswith(field)
    assert await count_rows(container.db, JournalEntry) == before


async def test_the_workspace_files_are_served_under_the_page_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/workspace", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/workspace/"
    r = await client.get("/workspace/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "script-src 'self'" in policy
    assert 'src="/workspace/app.js"' in r.text
    for name, kind in (
        ("app.js", "text/javascript"),
        ("verify.js", "text/javascript"),
        ("workspace.css", "text/css"),
        ("i18n/zh-CN.json", "application/json"),
    ):
        r = await client.get(f"/workspace/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
    en = (await client.get("/workspace/i18n/en.json")).json()
    zh = (await client.get("/workspace/i18n/zh-CN.json")).json()
    assert set(en) == set(zh)
    for missing in ("nothing.js", "../main.py", "i18n/../../api.py"):
        r = await client.get(f"/workspace/{missing}")
        assert r.status_code == 404, missing
