"""Issue 4 end to end: an order becomes a case, staff work it, the customer sees it all.

Both platforms run for real (api over HTTP, worker loops, one broker), each with
its own database; the autonomy tests take one platform down and bring it back.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from case_handling.cases.models import Attachment
from casebridge_shared.db import Database
from casebridge_shared.storage import LocalStore
from casebridge_shared.testing import wait_until
from casebridge_shared.testing.object_storage import stored_keys

from .conftest import Stack

# A small but real PDF (one empty page).
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


async def _json(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def place_order(
    customer: httpx.AsyncClient, product_id: str, text: str = "Is my non-compete valid?"
) -> str:
    r = await customer.post("/orders", json={"product_id": product_id, "description": text})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def case_of(staff: httpx.AsyncClient, order_id: str, timeout: float = 60) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def appeared() -> bool:
        items = (await _json(staff, "/cases", q=order_id, limit=100))["items"]
        matches = [c for c in items if c["order_id"] == order_id]
        if matches:
            found.update(matches[0])
        return bool(matches)

    await wait_until(appeared, timeout=timeout, message=f"a case for order {order_id}")
    return found


async def order_reaches(
    customer: httpx.AsyncClient, order_id: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await _json(customer, f"/orders/{order_id}"))
        return bool(seen["status"] == status)

    await wait_until(
        reached, timeout=timeout, message=f"order {order_id} {status} (last: {seen.get('status')})"
    )
    return seen


async def upload(
    staff: httpx.AsyncClient, case_id: str, name: str, data: bytes, visibility: str
) -> dict[str, Any]:
    r = await staff.post(
        f"/cases/{case_id}/attachments",
        files={"file": (name, data, "application/pdf")},
        data={"visibility": visibility},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_whole_path_customer_sees_every_step_and_downloads_the_same_pdf(stack: Stack) -> None:
    product_id = await stack.product()
    customer = await stack.register_customer("ada@example.org")
    staff = stack.client(stack.cases, await stack.staff("sam@casebridge.example"))

    order_id = await place_order(customer, product_id)
    case = await case_of(staff, order_id)
    assert case["status"] == "new"
    assert (await order_reaches(customer, order_id, "accepted"))["progress"][-1]["title"] == "Order accepted"

    case_id = case["id"]
    assert (await staff.post(f"/cases/{case_id}/claim")).status_code == 200
    await order_reaches(customer, order_id, "in_progress")
    assert (await staff.post(f"/cases/{case_id}/start")).status_code == 200
    secret_analysis = "Clause 7 is unenforceable; internal note: client seems anxious"
    r = await staff.post(f"/cases/{case_id}/analysis", json={"text": secret_analysis})
    assert r.status_code == 200, r.text
    r = await staff.post(
        f"/cases/{case_id}/communications",
        json={
            "channel": "phone",
            "direction": "outbound",
            "summary": "Explained the next steps on the phone",
            "occurred_at": datetime.now(UTC).isoformat(),
            "customer_visible": True,
        },
    )
    assert r.status_code == 200, r.text
    document = await upload(staff, case_id, "review.pdf", PDF, "customer")
    await upload(staff, case_id, "internal-notes.pdf", PDF + b"% internal\n", "internal")
    r = await staff.post(
        f"/cases/{case_id}/solution",
        json={
            "summary": "Your non-compete clause is void",
            "text": "Full reasoning: the clause lacks compensation.",
        },
    )
    assert r.status_code == 200, r.text
    solved = await order_reaches(customer, order_id, "solution_proposed")
    assert solved["solution"]["summary"] == "Your non-compete clause is void"
    assert r.status_code == 200
    assert (await staff.post(f"/cases/{case_id}/close")).status_code == 200

    order = await order_reaches(customer, order_id, "completed")
    titles = [p["title"] for p in order["progress"]]
    for step in (
        "Order received",
        "Order accepted",
        "Expert assigned",
        "Work started",
        "Legal analysis done",
        "We contacted you by phone",
        "Document added",
        "Solution ready",
        "Order completed",
    ):
        assert step in titles, titles
    assert titles.count("Document added") == 1  # the internal file is not the customer's business
    times = [p["at"] for p in order["progress"]]
    assert times == sorted(times)
    assert order["solution"]["text"] == "Full reasoning: the clause lacks compensation."
    assert secret_analysis not in str(order)
    assert "internal-notes" not in str(order)

    async def document_available() -> bool:
        docs = await _json(customer, f"/orders/{order_id}/documents")
        return len(docs) == 1 and docs[0]["status"] == "available"

    await wait_until(document_available, timeout=60, message="the document copied to order-intake")
    [listed] = await _json(customer, f"/orders/{order_id}/documents")
    assert listed["id"] == document["id"] and listed["sha256"] == hashlib.sha256(PDF).hexdigest()
    r = await customer.get(f"/orders/{order_id}/documents/{listed['id']}")
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == document["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert r.headers["content-type"] == "application/pdf"
    assert 'filename="review.pdf"' in r.headers["content-disposition"]

    # Another customer sees neither the order nor its documents.
    other = await stack.register_customer("eve@example.org")
    assert (await other.get(f"/orders/{order_id}/documents")).status_code == 404
    assert (await other.get(f"/orders/{order_id}/documents/{listed['id']}")).status_code == 404


async def test_each_platform_works_while_the_other_is_down(stack: Stack) -> None:
    product_id = await stack.product()
    customer = await stack.register_customer("ada@example.org")
    staff = stack.client(stack.cases, await stack.staff("sam@casebridge.example"))
    assert (await staff.get("/cases")).status_code == 200  # case-handling now knows the signing key

    # case-handling down: customers keep ordering and seeing their orders.
    await stack.cases.stop()
    order_ids = [await place_order(customer, product_id, f"need {i}") for i in range(3)]
    listed = await _json(customer, "/orders")
    assert {o["id"] for o in listed["items"]} >= set(order_ids)
    assert all(o["status"] == "submitted" for o in listed["items"])

    await stack.cases.start()
    cases = [await case_of(staff, order_id) for order_id in order_ids]
    for order_id in order_ids:
        await order_reaches(customer, order_id, "accepted")
    all_cases = (await _json(staff, "/cases", limit=100))["items"]
    assert sorted(c["order_id"] for c in all_cases) == sorted(order_ids)  # exactly one case each

    # order-intake down: staff keep working and uploading.
    await stack.intake.stop()
    case_id = cases[0]["id"]
    assert (await staff.post(f"/cases/{case_id}/claim")).status_code == 200
    assert (await staff.post(f"/cases/{case_id}/start")).status_code == 200
    document = await upload(staff, case_id, "advice.pdf", PDF, "customer")
    r = await staff.post(f"/cases/{case_id}/solution", json={"summary": "Done", "text": "The full advice."})
    assert r.status_code == 200, r.text

    await stack.intake.start()
    order = await order_reaches(customer, order_ids[0], "solution_proposed")
    assert order["solution"]["text"] == "The full advice."

    async def copied() -> bool:
        docs = await _json(customer, f"/orders/{order_ids[0]}/documents")
        return [d["status"] for d in docs] == ["available"]

    await wait_until(copied, timeout=60, message="the document copied after order-intake came back")

    # case-handling down again: the customer's copy is still there.
    await stack.cases.stop()
    r = await customer.get(f"/orders/{order_ids[0]}/documents/{document['id']}")
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == document["sha256"]
    await stack.cases.start()


async def test_a_document_whose_bytes_do_not_match_is_never_stored(stack: Stack) -> None:
    product_id = await stack.product()
    customer = await stack.register_customer("ada@example.org")
    staff = stack.client(stack.cases, await stack.staff("sam@casebridge.example"))
    order_id = await place_order(customer, product_id)
    case_id = (await case_of(staff, order_id))["id"]
    assert (await staff.post(f"/cases/{case_id}/claim")).status_code == 200

    # The intake worker is away while the file is uploaded and then damaged on disk.
    await stack.intake.worker.stop()
    document = await upload(staff, case_id, "advice.pdf", PDF, "customer")
    db = Database(stack.cases.settings.database_url)
    try:
        async with db.session() as s:
            attachment = (
                await s.execute(select(Attachment).where(Attachment.id == document["id"]))
            ).scalar_one()
    finally:
        await db.dispose()
    stored = stack.cases.settings.attachment_path / attachment.storage_key
    stored.write_bytes(PDF.replace(b"612", b"613"))  # same size, different bytes
    await stack.intake.worker.start()

    async def rejected() -> bool:
        docs = await _json(customer, f"/orders/{order_id}/documents")
        return [d["status"] for d in docs] == ["rejected"]

    await wait_until(rejected, timeout=60, message="the damaged document rejected")
    r = await customer.get(f"/orders/{order_id}/documents/{document['id']}")
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    # case-handling refuses its damaged copy (stored-file-damaged) and order-intake rejects it:
    # neither the file nor a partial one is kept.
    assert await stored_keys(LocalStore(stack.intake.settings.document_path)) == []
