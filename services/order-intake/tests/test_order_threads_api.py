"""The order's thread in order-intake: messages, the customer's files, read receipts (issue 26)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from casebridge_shared.auth import Role
from casebridge_shared.storage import CHUNK, ContentMismatch
from casebridge_shared.testing import count_rows
from casebridge_shared.testing.object_storage import STORAGE_BACKENDS, stored_keys, tamper
from order_intake.bootstrap import Container
from order_intake.db import outbox
from order_intake.documents.models import Document, DocumentStatus
from order_intake.identity.models import User
from order_intake.orders.models import Order
from order_intake.threads.models import OrderFile, OrderMessage, ReadReceipt

from .conftest import Factory

PROBLEM = "application/problem+json"
PDF = b"%PDF-1.7\n" + b"x" * 2000
PNG = b"\x89PNG\r\n\x1a\n" + b"y" * 500


async def _order(client: httpx.AsyncClient, factory: Factory) -> tuple[User, dict[str, Any]]:
    customer = await factory.customer()
    product = await factory.product()
    r = await client.post(
        "/orders", json={"product_id": product.id, "description": "Help"}, headers=factory.auth(customer)
    )
    assert r.status_code == 201, r.text
    return customer, r.json()


async def _events(container: Container, event_type: str) -> list[dict[str, Any]]:
    async with container.db.session() as session:
        rows = (
            await session.execute(
                select(outbox.outbox.c.payload).where(outbox.outbox.c.event_type == event_type)
            )
        ).scalars()
        return [json.loads(r) for r in rows]


def _problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


async def _set_status(container: Container, order_id: str, status: str) -> None:
    async with container.db.write_session() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        order.status = status
        session.add(order)
        await session.commit()


# --- messages ------------------------------------------------------------------------


async def test_customer_posts_a_message_staff_read_it_and_the_event_is_in_the_outbox(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    auth = factory.auth(customer)
    r = await client.post(
        f"/orders/{order['id']}/messages", json={"body": "  When will you call?  "}, headers=auth
    )
    assert r.status_code == 201, r.text
    message = r.json()
    assert message["author"] == "customer" and message["source"] == "message"
    assert message["body"] == "When will you call?"  # trimmed
    assert message["author_name"] == "Carla Customer"

    staff = await factory.user(Role.STAFF)
    for who in (auth, factory.auth(staff)):
        items = (await client.get(f"/orders/{order['id']}/messages", headers=who)).json()["items"]
        assert [i["id"] for i in items] == [message["id"]]

    posted = await _events(container, "casebridge.orders.message-posted.v1")
    assert len(posted) == 1
    data = posted[0]["data"]
    assert data["message_id"] == message["id"] and data["body"] == "When will you call?"
    assert data["order_id"] == order["id"] and data["customer_id"] == customer.id


async def test_messages_refuse_bad_input_and_write_nothing(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    auth = factory.auth(customer)
    url = f"/orders/{order['id']}/messages"
    _problem(await client.post(url, json={"body": ""}, headers=auth), 422, "body.body")
    _problem(await client.post(url, json={"body": "   \n "}, headers=auth), 422, "body.body")
    _problem(await client.post(url, json={"body": "x" * 5001}, headers=auth), 422, "body.body")
    _problem(await client.post(url, json={"body": "hi", "extra": 1}, headers=auth), 422)
    _problem(await client.post(url, json={}, headers=auth), 422, "body.body")
    _problem(await client.post(url, json={"body": "hi"}), 401)
    staff = await factory.user(Role.STAFF)
    _problem(await client.post(url, json={"body": "hi"}, headers=factory.auth(staff)), 403)
    stranger = await factory.customer()
    _problem(await client.post(url, json={"body": "hi"}, headers=factory.auth(stranger)), 404)
    _problem(await client.get(url, headers=factory.auth(stranger)), 404)
    _problem(await client.post("/orders/nope/messages", json={"body": "hi"}, headers=auth), 404)
    assert (await client.post(url, json={"body": "x" * 5000}, headers=auth)).status_code == 201

    await _set_status(container, order["id"], "cancelled")
    body = _problem(await client.post(url, json={"body": "hello?"}, headers=auth), 409, "status")
    assert body["current_status"] == "cancelled"
    assert await count_rows(container.db, OrderMessage) == 1
    assert len(await _events(container, "casebridge.orders.message-posted.v1")) == 1


async def test_idempotency_key_posts_a_message_once(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    headers = factory.auth(customer) | {"Idempotency-Key": "m-1"}
    url = f"/orders/{order['id']}/messages"
    first = await client.post(url, json={"body": "once"}, headers=headers)
    second = await client.post(url, json={"body": "once"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    _problem(await client.post(url, json={"body": "other"}, headers=headers), 422, "header.Idempotency-Key")
    assert await count_rows(container.db, OrderMessage) == 1
    assert len(await _events(container, "casebridge.orders.message-posted.v1")) == 1


# --- files ---------------------------------------------------------------------------


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_customer_attaches_two_files_at_once_and_downloads_them(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    auth = factory.auth(customer)
    files = [
        ("files", ("contract.pdf", PDF, "application/pdf")),
        ("files", ("../../photo.png", PNG, "image/png")),
    ]
    r = await client.post(f"/orders/{order['id']}/files", files=files, headers=auth)
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [i["file_name"] for i in items] == ["contract.pdf", "photo.png"]
    assert items[0]["sha256"] == hashlib.sha256(PDF).hexdigest() and items[0]["size"] == len(PDF)
    assert set(items[0]) == {"id", "file_name", "media_type", "size", "sha256", "uploaded_at"}

    listed = (await client.get(f"/orders/{order['id']}/files", headers=auth)).json()["items"]
    assert [i["id"] for i in listed] == [i["id"] for i in items]
    got = await client.get(f"/orders/{order['id']}/files/{items[1]['id']}", headers=auth)
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["etag"] == f'"{hashlib.sha256(PNG).hexdigest()}"'
    assert got.headers["content-disposition"].startswith("attachment")

    attached = await _events(container, "casebridge.orders.file-attached.v1")
    assert sorted(e["data"]["file_id"] for e in attached) == sorted(i["id"] for i in items)
    assert all("content" not in e["data"] for e in attached)


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_an_upload_sent_again_with_its_key_stores_the_files_once(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    keyed = factory.auth(customer) | {"Idempotency-Key": "upload-1"}
    url = f"/orders/{order['id']}/files"
    files = [("files", ("contract.pdf", PDF, "application/pdf")), ("files", ("photo.png", PNG, "image/png"))]
    first = await client.post(url, files=files, headers=keyed)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post(url, files=files, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    # One copy of each file: the retry's copies are dropped, its rows and events never made.
    assert sorted(await stored_keys(container.customer_files)) == sorted(
        i["id"] for i in first.json()["items"]
    )
    assert await count_rows(container.db, OrderFile) == 2
    assert len(await _events(container, "casebridge.orders.file-attached.v1")) == 2

    # The same key with another file (or the same file under another name) is a mistake.
    other = [("files", ("contract.pdf", PDF + b"changed", "application/pdf"))]
    _problem(await client.post(url, files=other, headers=keyed), 422, "header.Idempotency-Key")
    renamed = [("files", ("other.pdf", PDF, "application/pdf")), ("files", ("photo.png", PNG, "image/png"))]
    _problem(await client.post(url, files=renamed, headers=keyed), 422, "header.Idempotency-Key")
    too_long = factory.auth(customer) | {"Idempotency-Key": "k" * 201}
    _problem(await client.post(url, files=files, headers=too_long), 422, "header.Idempotency-Key")
    assert await count_rows(container.db, OrderFile) == 2
    assert len(await stored_keys(container.customer_files)) == 2


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_files_refuse_bad_input_and_keep_nothing_half_written(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    auth = factory.auth(customer)
    url = f"/orders/{order['id']}/files"

    # The second file is bad: the first one is not kept either.
    html = [
        ("files", ("ok.pdf", PDF, "application/pdf")),
        ("files", ("page.html", b"<html><script>alert(1)</script>", "text/html")),
    ]
    _problem(await client.post(url, files=html, headers=auth), 415, "body.files")
    markup = [("files", ("notes.txt", b"<script>alert(1)</script>", "text/plain"))]
    _problem(await client.post(url, files=markup, headers=auth), 415, "body.files")
    fake = [("files", ("fake.pdf", b"not a pdf at all", "application/pdf"))]
    _problem(await client.post(url, files=fake, headers=auth), 415, "body.files")
    empty = [("files", ("empty.txt", b"", "text/plain"))]
    _problem(await client.post(url, files=empty, headers=auth), 422, "body.files")
    exe = [("files", ("tool.exe", b"MZ\x90\x00", "application/x-msdownload"))]
    _problem(await client.post(url, files=exe, headers=auth), 415, "body.files")
    big = b"%PDF-" + b"z" * container.settings.customer_file_max_bytes
    _problem(
        await client.post(url, files=[("files", ("big.pdf", big, "application/pdf"))], headers=auth), 413
    )
    _problem(await client.post(url, data={"nothing": "here"}, headers=auth), 422, "body.files")
    many = [("files", (f"f{i}.txt", b"plain text", "text/plain")) for i in range(11)]
    _problem(await client.post(url, files=many, headers=auth), 422, "body.files")
    _problem(await client.post(url, files=fake), 401)
    staff = await factory.user(Role.STAFF)
    _problem(await client.post(url, files=fake, headers=factory.auth(staff)), 403)
    stranger = await factory.customer()
    _problem(
        await client.post(
            url, files=[("files", ("a.pdf", PDF, "application/pdf"))], headers=factory.auth(stranger)
        ),
        404,
    )
    _problem(await client.get(f"{url}/nope", headers=auth), 404)
    await _set_status(container, order["id"], "completed")
    _problem(
        await client.post(url, files=[("files", ("a.pdf", PDF, "application/pdf"))], headers=auth),
        409,
        "status",
    )

    assert await stored_keys(container.customer_files) == []
    assert await count_rows(container.db, OrderFile) == 0
    assert await _events(container, "casebridge.orders.file-attached.v1") == []


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_damaged_files_and_documents_are_never_served_as_whole(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    auth = factory.auth(customer)
    r = await client.post(
        f"/orders/{order['id']}/files", files=[("files", ("a.pdf", PDF, "application/pdf"))], headers=auth
    )
    [item] = r.json()["items"]
    async with container.db.session() as session:
        row = await session.get(OrderFile, item["id"])
        assert row is not None
    await tamper(container.customer_files, row.storage_key, PDF.replace(b"%PDF-1", b"%PDF-2"))
    refused = _problem(await client.get(f"/orders/{order['id']}/files/{item['id']}", headers=auth), 500)
    assert refused["type"].endswith("/stored-file-damaged")

    # A document larger than one chunk is streamed: a damaged one is cut short, never completed.
    large = b"%PDF-1.7\n" + b"d" * (CHUNK + 100)
    async with container.db.write_session() as session:
        session.add(
            Document(
                id="doc-large",
                order_id=order["id"],
                case_id="case-1",
                file_name="advice.pdf",
                media_type="application/pdf",
                size=len(large),
                sha256=hashlib.sha256(large).hexdigest(),
                status=DocumentStatus.AVAILABLE.value,
            )
        )
        await session.commit()
    await container.documents.put("doc-large", _chunks(large), max_bytes=len(large))
    await tamper(container.documents, "doc-large", large + b"!")  # another size: refused at once
    url = f"/orders/{order['id']}/documents/doc-large"
    assert _problem(await client.get(url, headers=auth), 500)["type"].endswith("/stored-file-damaged")
    assert await count_rows(container.db, ReadReceipt) == 0  # a refused download is no read receipt
    await container.documents.put("doc-large", _chunks(large), max_bytes=len(large))
    assert (await client.get(url, headers=auth)).content == large
    assert await count_rows(container.db, ReadReceipt) == 1
    await tamper(container.documents, "doc-large", large[:-1] + b"!")
    with pytest.raises(ContentMismatch):
        await client.get(url, headers=auth)
    await container.documents.delete("doc-large")
    assert "missing from storage" in _problem(await client.get(url, headers=auth), 404)["detail"]


# --- read receipts -------------------------------------------------------------------


async def _with_solution_and_document(container: Container, order_id: str) -> str:
    async with container.db.write_session() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        from casebridge_shared.db import utcnow

        order.solution_summary, order.solution_text, order.solution_at = "Do this", "Text", utcnow()
        order.status = "solution_proposed"
        session.add(order)
        document = Document(
            id="doc-1",
            order_id=order_id,
            case_id="case-1",
            file_name="advice.pdf",
            media_type="application/pdf",
            size=len(PDF),
            sha256=hashlib.sha256(PDF).hexdigest(),
            status=DocumentStatus.AVAILABLE.value,
        )
        session.add(document)
        await session.commit()
    await container.documents.put("doc-1", _chunks(PDF), max_bytes=len(PDF))
    return "doc-1"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_read_receipts_keep_the_first_read_and_downloads_count(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    auth = factory.auth(customer)
    url = f"/orders/{order['id']}/receipts"
    _problem(await client.post(url, json={"item": "solution"}, headers=auth), 409)  # no solution yet
    document_id = await _with_solution_and_document(container, order["id"])

    assert (await client.post(url, json={"item": "solution"}, headers=auth)).status_code == 204
    async with container.db.session() as session:
        first = (await session.execute(select(ReadReceipt.read_at))).scalar_one()
    assert (await client.post(url, json={"item": "solution"}, headers=auth)).status_code == 204
    async with container.db.session() as session:
        assert (await session.execute(select(ReadReceipt.read_at))).scalar_one() == first

    # Staff opening the order are not the customer reading it.
    staff = await factory.user(Role.STAFF)
    got = await client.get(f"/orders/{order['id']}/documents/{document_id}", headers=factory.auth(staff))
    assert got.status_code == 200
    assert await count_rows(container.db, ReadReceipt) == 1
    got = await client.get(f"/orders/{order['id']}/documents/{document_id}", headers=auth)
    assert got.status_code == 200 and got.content == PDF
    await client.get(f"/orders/{order['id']}/documents/{document_id}", headers=auth)
    assert await count_rows(container.db, ReadReceipt) == 2

    receipts = [e["data"] for e in await _events(container, "casebridge.orders.read-receipt.v1")]
    assert sorted((r["item"], r["document_id"]) for r in receipts) == [
        ("document", document_id),
        ("solution", None),
    ]


async def test_read_receipts_refuse_bad_input(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer, order = await _order(client, factory)
    await _with_solution_and_document(container, order["id"])
    auth = factory.auth(customer)
    url = f"/orders/{order['id']}/receipts"
    _problem(await client.post(url, json={"item": "invoice"}, headers=auth), 422, "body.item")
    _problem(await client.post(url, json={"item": "document"}, headers=auth), 422, "body.document_id")
    _problem(
        await client.post(url, json={"item": "solution", "document_id": "doc-1"}, headers=auth),
        422,
        "body.document_id",
    )
    _problem(
        await client.post(url, json={"item": "document", "document_id": "nope"}, headers=auth),
        404,
        "body.document_id",
    )
    _problem(await client.post(url, json={"item": "solution"}), 401)
    stranger = await factory.customer()
    _problem(await client.post(url, json={"item": "solution"}, headers=factory.auth(stranger)), 404)
    assert await count_rows(container.db, ReadReceipt) == 0
    assert await _events(container, "casebridge.orders.read-receipt.v1") == []
