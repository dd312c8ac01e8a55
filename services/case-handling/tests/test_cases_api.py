"""The staff's REST API: the workflow, its events, and every kind of bad request."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlmodel import col
from structlog.testing import capture_logs

from case_handling.bootstrap import Container
from case_handling.cases.models import Attachment, Case
from case_handling.db import outbox
from casebridge_shared import testing
from casebridge_shared.storage import LocalStore
from casebridge_shared.testing import TokenMinter
from casebridge_shared.testing.object_storage import STORAGE_BACKENDS, stored_keys, tamper

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n" + b"x" * 2000


def staff(minter: TokenMinter, who: str = "staff-1") -> dict[str, str]:
    return minter.headers(who, "staff", name=f"Staff {who}", email=f"{who}@casebridge.example")


def supervisor(minter: TokenMinter) -> dict[str, str]:
    return minter.headers("super-1", "supervisor", name="Sue Supervisor")


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


async def outbox_events(container: Container) -> list[dict[str, Any]]:
    async with container.db.session() as s:
        rows = (await s.execute(select(outbox.outbox.c.payload).order_by(outbox.outbox.c.id))).scalars()
        return [json.loads(r) for r in rows]


async def test_a_case_worked_from_new_to_closed(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    me = staff(minter)

    listed = await client.get("/cases", headers=me, params={"status": "new"})
    assert listed.status_code == 200
    assert listed.json()["total"] == 1 and listed.json()["items"][0]["id"] == case.id

    claimed = await client.post(f"/cases/{case.id}/claim", headers=me)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["status"] == "assigned" and claimed.json()["assignee_id"] == "staff-1"
    assert claimed.headers["ETag"] == '"2"'

    started = await client.post(f"/cases/{case.id}/start", headers={**me, "If-Match": '"2"'})
    assert started.json()["status"] == "in_progress"

    analysis = await client.post(
        f"/cases/{case.id}/analysis",
        headers=me,
        json={"text": "Rent increases are capped at 20% in 3 years."},
    )
    assert analysis.status_code == 200
    call = {
        "channel": "phone",
        "direction": "outbound",
        "summary": "Explained the cap; customer will send the letter.",
        "occurred_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC).isoformat(),
        "customer_visible": True,
    }
    assert (await client.post(f"/cases/{case.id}/communications", headers=me, json=call)).status_code == 200
    note = {**call, "summary": "Customer sounded unsure; check again.", "customer_visible": False}
    assert (await client.post(f"/cases/{case.id}/communications", headers=me, json=note)).status_code == 200

    pdf = await client.post(
        f"/cases/{case.id}/attachments",
        headers=me,
        files={"file": ("opinion.pdf", PDF, "application/pdf")},
        data={"visibility": "customer"},
    )
    assert pdf.status_code == 201, pdf.text
    assert pdf.json()["sha256"] == hashlib.sha256(PDF).hexdigest() and pdf.json()["size"] == len(PDF)
    internal = await client.post(
        f"/cases/{case.id}/attachments",
        headers=me,
        files={"file": ("working notes.txt", b"internal thoughts", "text/plain")},
    )
    assert internal.status_code == 201 and internal.json()["visibility"] == "internal"

    solution = await client.post(
        f"/cases/{case.id}/solution",
        headers=me,
        json={"summary": "The increase is not allowed.", "text": "Under the rent cap ... (full opinion)"},
    )
    assert solution.json()["status"] == "solution_proposed"
    closed = await client.post(f"/cases/{case.id}/close", headers=me)
    assert closed.json()["status"] == "closed" and closed.json()["closed_at"]

    read = await client.get(f"/cases/{case.id}", headers=me)
    body = read.json()
    kinds = [e["kind"] for e in body["timeline"]]
    assert kinds == [
        "opened",
        "assigned",
        "status_changed",
        "analysis",
        "communication",
        "communication",
        "attachment",
        "attachment",
        "solution",
        "closed",
    ]
    assert all(e["author_id"] for e in body["timeline"])
    assert body["timeline"][3]["data"]["text"].startswith("Rent increases")  # staff see their analysis
    assert [a["file_name"] for a in body["attachments"]] == ["opinion.pdf", "working notes.txt"]

    # What left through the outbox: every change, and nothing internal in it.
    events = await outbox_events(container)
    assert [e["type"].split(".")[2] for e in events] == [
        "case-opened",
        "case-assigned",
        "status-changed",
        "analysis-recorded",
        "communication-recorded",
        "communication-recorded",
        "attachment-added",
        "attachment-added",
        "solution-proposed",
        "case-closed",
    ]
    assert [e["aggregateversion"] for e in events] == list(range(1, 11))
    assert all(e["partitionkey"] == case.id for e in events)
    dumped = json.dumps(events)
    assert "Rent increases are capped" not in dumped
    assert "sounded unsure" not in dumped and "working notes" not in dumped
    assert events[4]["data"]["customer_visible_summary"].startswith("Explained the cap")
    assert events[5]["data"]["customer_visible_summary"] is None
    assert events[6]["data"]["file_name"] == "opinion.pdf" and events[7]["data"]["file_name"] is None
    assert events[8]["data"]["solution_text"].startswith("Under the rent cap")


async def test_only_staff_supervisors_and_admins_work_cases(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    case = await factory.case()
    assert (await client.get("/cases")).status_code == 401
    problem(await client.get("/cases", headers={"Authorization": "Bearer not-a-token"}), 401)
    for who in (
        minter.headers("cust-1", "customer"),
        minter.headers("dept-1", "department", department="finance"),
        minter.headers("service:order-intake", "service"),
    ):
        problem(await client.get("/cases", headers=who), 403)
        problem(await client.get(f"/cases/{case.id}", headers=who), 403)
        problem(await client.post(f"/cases/{case.id}/claim", headers=who), 403)
    assert (await client.get("/cases", headers=minter.headers("admin-1", "admin"))).status_code == 200
    # Assigning and cancelling are for supervisors.
    problem(
        await client.post(f"/cases/{case.id}/assign", headers=staff(minter), json={"assignee_id": "staff-2"}),
        403,
    )
    problem(await client.post(f"/cases/{case.id}/cancel", headers=staff(minter), json={"reason": "x"}), 403)


async def test_unknown_cases_and_invalid_transitions(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    me = staff(minter)
    problem(await client.get("/cases/nope", headers=me), 404)
    problem(await client.post("/cases/nope/claim", headers=me), 404)
    case = await factory.case()
    body = problem(await client.post(f"/cases/{case.id}/close", headers=me), 409)
    assert body["current_status"] == "new" and body["detail"] == "a case in state 'new' cannot be closed"
    problem(await client.post(f"/cases/{case.id}/start", headers=me), 409)
    problem(
        await client.post(f"/cases/{case.id}/solution", headers=me, json={"summary": "s", "text": "t"}), 409
    )

    cancelled = await client.post(
        f"/cases/{case.id}/cancel", headers=supervisor(minter), json={"reason": "dup"}
    )
    assert cancelled.json()["status"] == "cancelled"
    assert (
        problem(await client.post(f"/cases/{case.id}/claim", headers=me), 409)["current_status"]
        == "cancelled"
    )
    problem(await client.post(f"/cases/{case.id}/analysis", headers=me, json={"text": "late"}), 409)


async def test_concurrent_changes_the_loser_gets_412(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    case = await factory.case()
    me = staff(minter)
    assert (
        await client.post(f"/cases/{case.id}/claim", headers={**me, "If-Match": '"1"'})
    ).status_code == 200
    # Someone else read version 1 too and acts on it.
    stale = problem(
        await client.post(
            f"/cases/{case.id}/assign",
            headers={**supervisor(minter), "If-Match": '"1"'},
            json={"assignee_id": "staff-2"},
        ),
        412,
    )
    assert stale["current_version"] == 2
    problem(await client.post(f"/cases/{case.id}/start", headers={**me, "If-Match": "garbage"}), 412)
    # A second claimer without If-Match: the case is already someone's.
    problem(await client.post(f"/cases/{case.id}/claim", headers=staff(minter, "staff-2")), 409)


async def test_only_the_assignee_or_a_supervisor_works_an_assigned_case(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    case = await factory.case()
    await client.post(f"/cases/{case.id}/claim", headers=staff(minter))
    problem(await client.post(f"/cases/{case.id}/start", headers=staff(minter, "staff-2")), 403)
    reassigned = await client.post(
        f"/cases/{case.id}/assign",
        headers=supervisor(minter),
        json={"assignee_id": "staff-2", "assignee_name": "B"},
    )
    assert reassigned.json()["assignee_id"] == "staff-2" and reassigned.json()["status"] == "assigned"
    assert (await client.post(f"/cases/{case.id}/start", headers=staff(minter, "staff-2"))).status_code == 200


async def test_every_case_write_follows_one_rule_internal_notes_too(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    """A staff member who is not the assignee may write nothing, internal notes included."""
    case = await factory.case()
    owner, other = staff(minter), staff(minter, "staff-2")
    await client.post(f"/cases/{case.id}/claim", headers=owner)
    v2 = {"If-Match": '"2"'}
    refused = [
        client.patch(f"/cases/{case.id}", headers={**other, **v2}, json={"internal_notes": "mine now"}),
        client.patch(f"/cases/{case.id}", headers={**other, **v2}, json={"priority": "urgent"}),
        client.post(f"/cases/{case.id}/start", headers=other),
        client.post(f"/cases/{case.id}/analysis", headers=other, json={"text": "my view"}),
        client.post(
            f"/cases/{case.id}/communications",
            headers=other,
            json={
                "channel": "phone",
                "direction": "outbound",
                "summary": "called",
                "occurred_at": "2026-01-01T10:00:00Z",
            },
        ),
        client.post(
            f"/cases/{case.id}/attachments", headers=other, files={"file": ("a.txt", b"x", "text/plain")}
        ),
        client.post(f"/cases/{case.id}/assign", headers=other, json={"assignee_id": "staff-2"}),
        client.post(f"/cases/{case.id}/cancel", headers=other, json={"reason": "mine"}),
    ]
    for request in refused:
        body = problem(await request, 403)
        assert body["detail"]
    after = (await client.get(f"/cases/{case.id}", headers=owner)).json()
    assert after["version"] == 2 and after["internal_notes"] is None and after["priority"] == "normal"
    assert [e["kind"] for e in after["timeline"]].count("analysis") == 0
    assert after["attachments"] == []
    # The assignee and a supervisor may change the internal notes.
    mine = await client.patch(f"/cases/{case.id}", headers={**owner, **v2}, json={"internal_notes": "VIP"})
    assert mine.status_code == 200, mine.text
    sup = await client.patch(
        f"/cases/{case.id}", headers={**supervisor(minter), "If-Match": '"3"'}, json={"internal_notes": "ok"}
    )
    assert sup.status_code == 200 and sup.json()["internal_notes"] == "ok"


async def test_bad_bodies_are_422_with_the_field(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    body = problem(
        await client.post(f"/cases/{case.id}/communications", headers=me, json={"channel": "fax"}), 422
    )
    fields = {e["field"] for e in body["errors"]}
    assert {"body.channel", "body.direction", "body.summary", "body.occurred_at"} <= fields
    problem(await client.post(f"/cases/{case.id}/analysis", headers=me, content=b"{not json"), 422)
    problem(await client.post(f"/cases/{case.id}/analysis", headers=me, json={"text": ""}), 422)
    problem(await client.post(f"/cases/{case.id}/solution", headers=me, json={"summary": "x"}), 422)
    problem(await client.post(f"/cases/{case.id}/assign", headers=supervisor(minter), json={}), 422)
    problem(await client.get("/cases", headers=me, params={"status": "lost"}), 422)
    problem(await client.get("/cases", headers=me, params={"limit": 0}), 422)
    problem(await client.post(f"/cases/{case.id}/analysis", headers=me, json={"text": "x" * 2_000_000}), 413)


async def test_service_information_is_corrected_with_if_match(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    me = staff(minter)
    problem(await client.patch(f"/cases/{case.id}", headers=me, json={"priority": "high"}), 428)
    problem(
        await client.patch(f"/cases/{case.id}", headers={**me, "If-Match": '"7"'}, json={"priority": "high"}),
        412,
    )
    problem(
        await client.patch(f"/cases/{case.id}", headers={**me, "If-Match": '"1"'}, json={"priority": "asap"}),
        422,
    )
    problem(
        await client.patch(f"/cases/{case.id}", headers={**me, "If-Match": '"1"'}, json={"colour": "red"}),
        422,
    )
    events_before = len(await outbox_events(container))
    updated = await client.patch(
        f"/cases/{case.id}",
        headers={**me, "If-Match": '"1"'},
        json={"priority": "urgent", "customer_phone": "+49 30 1234567", "internal_notes": "VIP"},
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["priority"] == "urgent" and body["customer"]["phone"] == "+49 30 1234567"
    assert body["version"] == 2 and updated.headers["ETag"] == '"2"'
    entry = body["timeline"][-1]
    assert entry["kind"] == "service_information_updated" and not entry["customer_visible"]
    assert entry["data"]["changes"]["priority"] == {"before": "normal", "after": "urgent"}
    assert len(await outbox_events(container)) == events_before  # internal: no event


async def test_finding_cases(client: httpx.AsyncClient, factory: Any, minter: TokenMinter) -> None:
    me = staff(minter)
    a = await factory.case(description="Dispute with my employer about overtime pay")
    b = await factory.case()
    await factory.case(
        product={**(await _product("family")), "title": "Divorce consultation"},
        description="Custody question",
    )
    await client.post(f"/cases/{a.id}/claim", headers=me)

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/cases", headers=me, params=params)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert await ids(assignee="me") == [a.id]
    assert set(await ids(assignee="none")) == {b.id, (await ids(category="family"))[0]}
    assert await ids(q="OVERTIME") == [a.id]
    assert len(await ids(q="ada@example.org")) == 3  # customer contact is searchable
    assert len(await ids(category="tenancy")) == 2
    page = (await client.get("/cases", headers=me, params={"limit": 1, "sort": "created_at"})).json()
    assert page["total"] == 3 and page["items"][0]["id"] == a.id
    future = datetime(2100, 1, 1, tzinfo=UTC).isoformat()
    assert await ids(created_from=future) == []
    problem(await client.get("/cases", headers=me, params={"sort": "price"}), 422)


async def _product(category: str) -> dict[str, Any]:
    return {
        "product_id": "p-family",
        "title": "Family law",
        "description": "Family law advice.",
        "deliverables": [],
        "category": category,
        "price": "99.00",
        "currency": "EUR",
        "version": 1,
    }


# --- attachments ----------------------------------------------------------------------


async def stored_files(container: Container) -> list[str]:
    """What the attachment store holds (local files or S3), half-written uploads included."""
    return await stored_keys(container.attachments)


async def attachment_count(container: Container) -> int:
    async with container.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(Attachment))).scalar_one())


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_uploads_beyond_the_limits_leave_nothing_behind(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    url = f"/cases/{case.id}/attachments"
    too_big = b"%PDF-" + b"0" * (64 * 1024)  # the test limit is 64 KiB
    problem(await client.post(url, headers=me, files={"file": ("big.pdf", too_big, "application/pdf")}), 413)
    huge = b"%PDF-" + b"0" * (1024 * 1024)  # beyond the request body limit too
    problem(await client.post(url, headers=me, files={"file": ("huge.pdf", huge, "application/pdf")}), 413)
    problem(
        await client.post(url, headers=me, files={"file": ("a.zip", b"PK\x03\x04", "application/zip")}), 415
    )
    problem(
        await client.post(url, headers=me, files={"file": ("fake.pdf", b"MZ\x90\x00", "application/pdf")}),
        415,
    )
    problem(await client.post(url, headers=me, files={"file": ("empty.txt", b"", "text/plain")}), 422)
    problem(await client.post(url, headers=me, data={"visibility": "customer"}), 422)
    problem(
        await client.post(
            url, headers=me, files={"file": ("a.txt", b"x", "text/plain")}, data={"visibility": "x"}
        ),
        422,
    )
    problem(
        await client.post(
            "/cases/nope/attachments", headers=me, files={"file": ("a.txt", b"x", "text/plain")}
        ),
        404,
    )
    problem(
        await client.post(
            url, headers=staff(minter, "staff-2"), files={"file": ("a.txt", b"x", "text/plain")}
        ),
        403,
    )
    assert await stored_files(container) == []
    assert await attachment_count(container) == 0


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_an_upload_cut_off_midway_leaves_no_partial_file(
    app: FastAPI, factory: Any, minter: TokenMinter, container: Container, client: httpx.AsyncClient
) -> None:
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    boundary = "cut-off-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    chunks = [head + b"%PDF-1.7\n" + b"a" * 20_000, b"b" * 20_000]  # ... and then the client is gone
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": True} for c in chunks
    ] + [{"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/cases/{case.id}/attachments",
        "raw_path": f"/cases/{case.id}/attachments".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"case-handling"),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"content-length", b"60000"),
            *[(k.lower().encode(), v.encode()) for k, v in me.items()],
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("case-handling", 80),
        "state": {},
    }
    # A disconnect may surface as an exception; what matters is what is left behind.
    with contextlib.suppress(Exception):
        await app(scope, receive, send)
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert 201 not in statuses
    assert await stored_files(container) == []
    assert await attachment_count(container) == 0


def test_attachments_stay_local_files_unless_s3_is_chosen(container: Container) -> None:
    assert container.settings.storage_backend == "local"
    assert isinstance(container.attachments, LocalStore)
    assert container.attachments.directory == container.settings.attachment_path


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_a_damaged_attachment_is_refused_with_a_problem_and_logged(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    url = f"/cases/{case.id}/attachments"
    uploaded = (
        await client.post(url, headers=me, files={"file": ("advice.pdf", PDF, "application/pdf")})
    ).json()
    async with container.db.session() as s:
        row = await s.get(Attachment, uploaded["id"])
        assert row is not None
    assert (await client.get(f"{url}/{row.id}/content", headers=me)).content == PDF
    await tamper(container.attachments, row.storage_key, PDF.replace(b"%PDF-1", b"%PDF-2"))
    with capture_logs() as logs:
        refused = problem(await client.get(f"{url}/{row.id}/content", headers=me), 500)
    assert refused["type"].endswith("/stored-file-damaged")
    [logged] = [e for e in logs if e["event"] == "storage.damaged"]
    assert logged["log_level"] == "error" and logged["key"] == row.storage_key
    await container.attachments.delete(row.storage_key)
    missing = problem(await client.get(f"{url}/{row.id}/content", headers=me), 404)
    assert "missing from storage" in missing["detail"]


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_downloads_staff_see_all_order_intake_only_customer_visible(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    url = f"/cases/{case.id}/attachments"
    visible = (
        await client.post(
            url,
            headers=me,
            files={"file": ("Gutachten ä.pdf", PDF, "application/pdf")},
            data={"visibility": "customer"},
        )
    ).json()
    internal = (
        await client.post(url, headers=me, files={"file": ("notes.txt", b"secret", "text/plain")})
    ).json()

    listed = await client.get(url, headers=me)
    assert [a["id"] for a in listed.json()] == [visible["id"], internal["id"]]

    service = minter.headers("service:order-intake", "service")
    got = await client.get(f"{url}/{visible['id']}/content", headers=service)
    assert got.status_code == 200
    assert got.content == PDF and hashlib.sha256(got.content).hexdigest() == visible["sha256"]
    assert got.headers["content-type"] == "application/pdf"
    assert (
        "attachment" in got.headers["content-disposition"]
        and "Gutachten" in got.headers["content-disposition"]
    )
    problem(await client.get(f"{url}/{internal['id']}/content", headers=service), 404)
    problem(await client.get(f"{url}/nope/content", headers=service), 404)
    problem(await client.get(f"/cases/other/attachments/{visible['id']}/content", headers=me), 404)
    assert (await client.get(f"{url}/{internal['id']}/content", headers=me)).content == b"secret"
    problem(await client.get(f"{url}/{visible['id']}/content", headers=minter.headers("c", "customer")), 403)
    problem(await client.get(url, headers=service), 403)  # listing is for staff
    # Downloads are never sniffed, framed or run (issue 25).
    testing.assert_security_headers(got)
    assert got.headers["content-disposition"].startswith("attachment;")


async def test_file_names_lose_control_characters_and_active_content_is_refused(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    """Issue 25: a right-to-left override made a PDF's name show as .png; HTML, SVG and XML
    labelled as text were stored and served."""
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    url = f"/cases/{case.id}/attachments"
    spoofed = await client.post(
        url, headers=me, files={"file": ("invoice\u202egnp.pdf", PDF, "application/pdf")}
    )
    assert spoofed.status_code == 201, spoofed.text
    assert spoofed.json()["file_name"] == "invoicegnp.pdf"
    isolates = await client.post(
        url, headers=me, files={"file": ("a\u2066b\u2069\u200b\u200f.txt", b"plain words", "text/plain")}
    )
    assert isolates.json()["file_name"] == "ab.txt"
    got = await client.get(f"{url}/{spoofed.json()['id']}/content", headers=me)
    assert "invoicegnp.pdf" in got.headers["content-disposition"]
    assert (
        "\u202e" not in got.headers["content-disposition"]
        and "%E2%80%AE" not in got.headers["content-disposition"]
    )

    for name, content, declared in (
        ("note.txt", b"<!DOCTYPE html><script>fetch('/cases')</script>", "text/plain"),
        ("note.txt", b"  <html><body onload=alert(1)>", "text/plain"),
        (
            "logo.txt",
            b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
            "text/plain",
        ),
        ("data.txt", b"<?xml version='1.0'?><x/>", "text/plain"),
        ("page.txt", b"\xef\xbb\xbfHello <iframe src=//evil>", "text/plain"),
        ("page.html", b"<p>hi</p>", "text/html"),
        ("page.html", b"just words", "text/plain"),  # the name says HTML
        ("pic.svg", b"<svg/>", "image/svg+xml"),
        ("x.xml", b"<x/>", "application/octet-stream"),
    ):
        refused = problem(await client.post(url, headers=me, files={"file": (name, content, declared)}), 415)
        assert refused["errors"][0]["field"] == "body.file", refused
    assert await attachment_count(container) == 2
    assert len(await stored_files(container)) == 2


async def test_cursor_pages_of_a_queue_return_each_case_once_while_cases_arrive(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    me = staff(minter)
    tenancy = [(await factory.case()).id for _ in range(7)]
    family = await _product("family")
    await factory.case(product=family)
    await client.post(f"/cases/{tenancy[0]}/claim", headers=me)  # no longer in the unassigned queue
    # Two cases opened in the same microsecond: the id keeps them apart at a page boundary.
    async with container.uow() as uow:
        moment = (await uow.session.get(Case, tenancy[2])).created_at  # type: ignore[union-attr]
        await uow.session.execute(update(Case).where(col(Case.id) == tenancy[3]).values(created_at=moment))
        await uow.commit()

    for sort in ("-created_at", "order_placed_at"):
        params = {"queue": "unassigned", "category": "tenancy", "sort": sort, "limit": "2"}
        r = await client.get("/cases", headers=me, params=params)
        assert r.links["first"]["url"] == "/cases?" + urlencode(params)
        seen: list[str] = []
        while True:
            assert r.status_code == 200, r.text
            seen += [c["id"] for c in r.json()["items"]]
            await factory.case()  # a new case in the same queue, while the staff member pages
            if "next" not in r.links:
                break
            for name, value in params.items():  # the queue, filters and sort go on to the next page
                if name != "limit":
                    assert f"{name}={quote(value, safe='')}" in r.links["next"]["url"]
            r = await client.get(r.links["next"]["url"], headers=me)
        # Every case that was there once (new ones may join ahead or behind), no claimed or family case.
        assert set(tenancy[1:]) <= set(seen) and len(seen) == len(set(seen)), sort
        assert tenancy[0] not in seen
    # The console's offset page is unchanged, with a cursor onwards besides.
    page = (await client.get("/cases", headers=me, params={"queue": "open", "limit": 50})).json()
    assert page["offset"] == 0 and page["next_cursor"] is None and page["total"] == len(page["items"])


async def test_finding_cases_refuses_bad_cursors(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    me = staff(minter)
    for _ in range(2):
        await factory.case()
    cursor = (await client.get("/cases", headers=me, params={"limit": 1})).json()["next_cursor"]
    for params in (
        {"cursor": "%%%"},
        {"cursor": cursor, "sort": "created_at"},  # made for newest first
        {"cursor": cursor, "queue": "mine"},
        {"cursor": cursor + "A"},
    ):
        body = problem(await client.get("/cases", headers=me, params=params), 422)
        assert body["errors"][0]["field"] == "query.cursor", params
    body = problem(await client.get("/cases", headers=me, params={"cursor": cursor, "offset": 1}), 422)
    assert body["errors"][0]["field"] == "query.offset"
    problem(await client.get("/cases", headers=me, params={"limit": 201}), 422)
    assert (await client.get("/cases", headers=me, params={"cursor": cursor})).status_code == 200
