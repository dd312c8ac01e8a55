"""Issue 26 end to end: the order's thread between the customer (order-intake) and the staff
(case-handling), as events, each side working while the other is down.

Both platforms run for real (api over HTTP, worker loops, one broker), each with its own
database; the customer's files travel as an event plus a fetch with a service token.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from casebridge_shared.db import Database
from casebridge_shared.outbox import relay_status
from casebridge_shared.testing import wait_until
from order_intake.db import outbox as intake_outbox

from .conftest import Stack
from .test_order_to_case import PDF, case_of, order_reaches, place_order, upload

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


async def _json(client: httpx.AsyncClient, path: str) -> Any:
    r = await client.get(path)
    assert r.status_code == 200, r.text
    return r.json()


async def attach(customer: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    files = [("files", ("lease.pdf", PDF, "application/pdf")), ("files", ("photo.png", PNG, "image/png"))]
    r = await customer.post(f"/orders/{order_id}/files", files=files)
    assert r.status_code == 201, r.text
    return list(r.json()["items"])


async def case_has(staff: httpx.AsyncClient, case_id: str, messages: int, files: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def arrived() -> bool:
        seen["messages"] = (await _json(staff, f"/cases/{case_id}/messages"))["items"]
        seen["case"] = await _json(staff, f"/cases/{case_id}")
        customer_files = [a for a in seen["case"]["attachments"] if a["origin"] == "customer"]
        return len(seen["messages"]) >= messages and len(customer_files) >= files

    await wait_until(
        arrived, timeout=90, message=f"case {case_id}: {messages} messages, {files} customer files"
    )
    return seen


async def thread_has(customer: httpx.AsyncClient, order_id: str, body: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []

    async def arrived() -> bool:
        items[:] = (await _json(customer, f"/orders/{order_id}/messages"))["items"]
        return any(i["body"] == body for i in items)

    await wait_until(arrived, timeout=90, message=f"{body!r} in the order's thread")
    return items


async def test_messages_files_and_receipts_travel_both_ways(stack: Stack) -> None:
    product_id = await stack.product()
    customer = await stack.register_customer("ada@example.org")
    staff = stack.client(stack.cases, await stack.staff("sam@casebridge.example"))
    order_id = await place_order(customer, product_id)
    case_id = (await case_of(staff, order_id))["id"]

    r = await customer.post(f"/orders/{order_id}/messages", json={"body": "Here is my lease and a photo."})
    assert r.status_code == 201, r.text
    sent = await attach(customer, order_id)

    seen = await case_has(staff, case_id, messages=1, files=2)
    assert [(m["author"], m["body"]) for m in seen["messages"]] == [
        ("customer", "Here is my lease and a photo.")
    ]
    copies = {a["id"]: a for a in seen["case"]["attachments"]}
    for item in sent:
        assert copies[item["id"]]["sha256"] == item["sha256"]
        assert (
            copies[item["id"]]["origin"] == "customer"
            and copies[item["id"]]["file_name"] == item["file_name"]
        )
        content = await staff.get(f"/cases/{case_id}/attachments/{item['id']}/content")
        assert hashlib.sha256(content.content).hexdigest() == item["sha256"]

    assert (await staff.post(f"/cases/{case_id}/claim")).status_code == 200
    assert (await staff.post(f"/cases/{case_id}/start")).status_code == 200
    r = await staff.post(f"/cases/{case_id}/messages", json={"body": "Thanks, we are on it."})
    assert r.status_code == 201, r.text
    items = await thread_has(customer, order_id, "Thanks, we are on it.")
    assert [(i["author"], i["source"]) for i in items] == [("customer", "message"), ("staff", "message")]
    assert items[1]["author_name"] == "Sam Staff"

    document = await upload(staff, case_id, "advice.pdf", PDF + b"% advice\n", "customer")
    r = await staff.post(f"/cases/{case_id}/solution", json={"summary": "Void clause", "text": "Reasons."})
    assert r.status_code == 200, r.text
    await order_reaches(customer, order_id, "solution_proposed")
    assert (await customer.post(f"/orders/{order_id}/receipts", json={"item": "solution"})).status_code == 204

    async def document_here() -> bool:
        docs = await _json(customer, f"/orders/{order_id}/documents")
        return bool(docs) and docs[0]["status"] == "available"

    await wait_until(document_here, timeout=60, message="the document copied to order-intake")
    assert (await customer.get(f"/orders/{order_id}/documents/{document['id']}")).status_code == 200

    receipts: dict[str, Any] = {}

    async def receipts_shown() -> bool:
        receipts.update((await _json(staff, f"/cases/{case_id}"))["receipts"])
        return receipts["solution_read_at"] is not None and len(receipts["documents"]) == 1

    await wait_until(receipts_shown, timeout=60, message="the read receipts on the case")
    assert receipts["documents"][0]["attachment_id"] == document["id"]


async def _published(platform_db_url: str) -> None:
    """Everything order-intake committed is on the broker (its relay's backlog is empty)."""
    db = Database(platform_db_url)
    try:

        async def drained() -> bool:
            return (await relay_status(db, intake_outbox, runs=0)).backlog == 0

        await wait_until(drained, timeout=60, message="order-intake's outbox published")
    finally:
        await db.dispose()


async def test_each_side_keeps_working_while_the_other_is_down(stack: Stack) -> None:
    product_id = await stack.product()
    customer = await stack.register_customer("ada@example.org")
    staff = stack.client(stack.cases, await stack.staff("sam@casebridge.example"))
    order_id = await place_order(customer, product_id)
    case_id = (await case_of(staff, order_id))["id"]
    assert (await staff.post(f"/cases/{case_id}/claim")).status_code == 200

    # case-handling down: the customer writes and attaches all the same.
    await stack.cases.stop()
    assert (
        await customer.post(f"/orders/{order_id}/messages", json={"body": "Are you there?"})
    ).status_code == 201
    sent = await attach(customer, order_id)
    await _published(stack.intake.settings.database_url)

    # order-intake goes down too before case-handling comes back: the events are on the broker,
    # the files are not fetchable; case-handling takes the messages and keeps retrying the files.
    await stack.intake.stop()
    await stack.cases.start()
    seen = await case_has(staff, case_id, messages=1, files=0)
    assert seen["messages"][0]["body"] == "Are you there?"
    r = await staff.post(f"/cases/{case_id}/messages", json={"body": "Yes, reading your files."})
    assert r.status_code == 201, r.text
    assert [a for a in seen["case"]["attachments"] if a["origin"] == "customer"] == []

    # order-intake back: the files arrive (same SHA-256) and the reply reaches the order's thread.
    await stack.intake.start()
    seen = await case_has(staff, case_id, messages=2, files=2)
    hashes = sorted(a["sha256"] for a in seen["case"]["attachments"] if a["origin"] == "customer")
    assert hashes == sorted(item["sha256"] for item in sent)
    await thread_has(customer, order_id, "Yes, reading your files.")
