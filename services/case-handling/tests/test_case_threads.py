"""The order's thread on the case (issue 26): the customer's messages, files and read receipts
arriving as order-intake's events, staff replies leaving as case events, the file fetcher."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from case_handling.bootstrap import Container
from case_handling.cases.models import (
    Attachment,
    Case,
    CaseMessage,
    CaseReceipt,
    CustomerFileFetch,
    CustomerFileFetchStatus,
)
from case_handling.intake import service as intake
from case_handling.intake.events import PAYLOAD_MODELS
from case_handling.threads.fetcher import CustomerFileFetcher
from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import PoisonEvent
from casebridge_shared.testing import TokenMinter, count_rows
from casebridge_shared.testing.object_storage import STORAGE_BACKENDS, stored_keys

from .test_cases_api import outbox_events, problem, staff, supervisor

PDF = b"%PDF-1.7\n" + b"q" * 3000


def thread_event(case: Case, kind: str, **data: Any) -> CloudEvent:
    now = datetime.now(UTC)
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake",
        type=f"casebridge.orders.{kind}.v1",
        time=now,
        partitionkey=case.order_id,
        aggregateversion=1,
        data={"order_id": case.order_id, "customer_id": case.customer_id, "at": now.isoformat(), **data},
    )


async def apply(container: Container, event: CloudEvent) -> None:
    """What the consumer does with one event (handler and payload model as registered)."""
    payload = PAYLOAD_MODELS[event.type].model_validate(event.data)
    async with container.uow() as uow:
        await intake.HANDLERS[event.type](uow, event, payload)
        await uow.commit()


def message(case: Case, body: str = "Any news?") -> CloudEvent:
    return thread_event(case, "message-posted", message_id=str(uuid.uuid4()), author_name="Ada", body=body)


def announced_file(case: Case, content: bytes = PDF, **over: Any) -> CloudEvent:
    return thread_event(
        case,
        "file-attached",
        **(
            {
                "file_id": str(uuid.uuid4()),
                "file_name": "lease.pdf",
                "media_type": "application/pdf",
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
            | over
        ),
    )


async def test_the_same_thread_events_twice_are_one_row_each(container: Container, factory: Any) -> None:
    case = await factory.case()
    posted, attached = message(case), announced_file(case)
    solution = thread_event(
        case, "read-receipt", item="solution", document_id=None, read_at=datetime.now(UTC).isoformat()
    )
    for event in (posted, posted, attached, attached, solution, solution):
        await apply(container, event)
    # A second receipt for the same item (another event id) keeps the first read time.
    later = thread_event(
        case, "read-receipt", item="solution", document_id=None, read_at="2030-01-01T00:00:00+00:00"
    )
    await apply(container, later)
    assert await count_rows(container.db, CaseMessage) == 1
    assert await count_rows(container.db, CustomerFileFetch) == 1
    # The notifier hears of the message once, without its text.
    told = [
        e
        for e in await outbox_events(container)
        if e["type"] == "casebridge.cases.customer-message-received.v1"
    ]
    assert len(told) == 1 and told[0]["data"]["message_id"] == posted.data["message_id"]
    assert "body" not in told[0]["data"] and told[0]["data"]["product_category"] == case.product_category
    async with container.db.session() as s:
        receipts = (await s.execute(select(CaseReceipt))).scalars().all()
    assert len(receipts) == 1 and receipts[0].read_at.year != 2030


async def test_thread_events_for_an_order_without_its_case_are_poison(
    container: Container, factory: Any
) -> None:
    case = await factory.case()
    stranger = Case(**{**case.model_dump(), "customer_id": "someone-else"})
    with pytest.raises(PoisonEvent):
        await apply(container, message(stranger))
    missing = Case(**{**case.model_dump(), "order_id": str(uuid.uuid4())})
    with pytest.raises(PoisonEvent):
        await apply(container, announced_file(missing))
    assert await count_rows(container.db, CaseMessage) == 0


async def test_staff_read_the_thread_and_reply_and_the_case_shows_receipts(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    me = staff(minter)
    await apply(container, message(case, "When do we talk?"))
    assert (await client.post(f"/cases/{case.id}/claim", headers=me)).status_code == 200
    comm = {
        "channel": "phone",
        "direction": "outbound",
        "summary": "Called about the lease",
        "occurred_at": datetime.now(UTC).isoformat(),
        "customer_visible": True,
    }
    assert (await client.post(f"/cases/{case.id}/communications", json=comm, headers=me)).status_code == 200
    internal = comm | {"summary": "internal only", "customer_visible": False}
    assert (
        await client.post(f"/cases/{case.id}/communications", json=internal, headers=me)
    ).status_code == 200
    r = await client.post(f"/cases/{case.id}/messages", json={"body": " Tomorrow at 10. "}, headers=me)
    assert r.status_code == 201, r.text
    reply = r.json()
    assert (
        reply["author"] == "staff"
        and reply["body"] == "Tomorrow at 10."
        and reply["author_name"] == "Staff staff-1"
    )

    items = (await client.get(f"/cases/{case.id}/messages", headers=me)).json()["items"]
    assert [(i["author"], i["source"], i["body"]) for i in items] == [
        ("customer", "message", "When do we talk?"),
        ("staff", "communication", "Called about the lease"),
        ("staff", "message", "Tomorrow at 10."),
    ]
    sent = [e for e in await outbox_events(container) if e["type"] == "casebridge.cases.message-posted.v1"]
    assert len(sent) == 1
    assert sent[0]["data"]["message_id"] == reply["id"] and sent[0]["data"]["order_id"] == case.order_id

    read_at = datetime.now(UTC).isoformat()
    await apply(
        container, thread_event(case, "read-receipt", item="solution", document_id=None, read_at=read_at)
    )
    await apply(
        container, thread_event(case, "read-receipt", item="document", document_id="att-1", read_at=read_at)
    )
    body = (await client.get(f"/cases/{case.id}", headers=me)).json()
    assert body["receipts"]["solution_read_at"] is not None
    assert [d["attachment_id"] for d in body["receipts"]["documents"]] == ["att-1"]


async def test_replies_refuse_bad_input_and_write_nothing(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    url = f"/cases/{case.id}/messages"
    for bad in ({"body": ""}, {"body": "  \n"}, {"body": "x" * 5001}, {}, {"body": "a", "more": 1}):
        body = problem(await client.post(url, json=bad, headers=me), 422)
        assert body["errors"][0]["field"].startswith("body"), body
    problem(await client.post(url, json={"body": "hi"}), 401)
    problem(await client.get(url), 401)
    problem(await client.post(url, json={"body": "hi"}, headers=minter.headers("cust-1", "customer")), 403)
    problem(await client.get(url, headers=minter.headers("cust-1", "customer")), 403)
    problem(await client.post(url, json={"body": "hi"}, headers=staff(minter, "staff-2")), 403)  # not theirs
    problem(await client.post("/cases/nope/messages", json={"body": "hi"}, headers=me), 404)
    problem(await client.get("/cases/nope/messages", headers=me), 404)
    await client.post(f"/cases/{case.id}/cancel", json={"reason": "withdrawn"}, headers=supervisor(minter))
    problem(await client.post(url, json={"body": "hi"}, headers=me), 409)
    assert await count_rows(container.db, CaseMessage) == 0
    assert not [
        e for e in await outbox_events(container) if e["type"] == "casebridge.cases.message-posted.v1"
    ]


async def test_a_reply_with_an_idempotency_key_is_posted_once(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    me = staff(minter)
    await client.post(f"/cases/{case.id}/claim", headers=me)
    url = f"/cases/{case.id}/messages"
    keyed = me | {"Idempotency-Key": "reply-1"}
    first = await client.post(url, json={"body": "Tomorrow at 10."}, headers=keyed)
    again = await client.post(url, json={"body": "Tomorrow at 10."}, headers=keyed)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    # The same key for another message is the client's mistake, not a replay.
    body = problem(await client.post(url, json={"body": "Tomorrow at 11."}, headers=keyed), 422)
    assert body["errors"][0]["field"] == "header.Idempotency-Key"
    # Keys are the author's own: a colleague's same key posts their reply.
    boss = supervisor(minter) | {"Idempotency-Key": "reply-1"}
    other = await client.post(url, json={"body": "Tomorrow at 10."}, headers=boss)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"], other.text
    # Without a key, nothing is held back: the same text twice is two replies.
    for _ in range(2):
        assert (await client.post(url, json={"body": "ping"}, headers=me)).status_code == 201
    problem(await client.post(url, json={"body": "x"}, headers=me | {"Idempotency-Key": ""}), 422)
    problem(await client.post(url, json={"body": "x"}, headers=me | {"Idempotency-Key": "k" * 201}), 422)

    assert await count_rows(container.db, CaseMessage) == 4
    sent = [e for e in await outbox_events(container) if e["type"] == "casebridge.cases.message-posted.v1"]
    assert len(sent) == 4 and [e["data"]["message_id"] for e in sent].count(first.json()["id"]) == 1


def order_intake_double(content: bytes, *, token_ok: bool = True) -> tuple[Starlette, list[str]]:
    """order-intake as the fetcher sees it: a token endpoint and the file (a stand-in on the
    wire; the real one is in tests/test_order_threads.py)."""
    seen: list[str] = []

    async def token(request: Request) -> Response:
        form = await request.form()
        seen.append(f"token:{form.get('grant_type')}:{form.get('client_id')}")
        if not token_ok:
            return JSONResponse({"detail": "no"}, status_code=401)
        return JSONResponse({"access_token": "tok", "token_type": "bearer", "expires_in": 300})

    async def file(request: Request) -> Response:
        seen.append(f"file:{request.headers.get('authorization')}")
        return Response(content, media_type="application/pdf")

    return Starlette(
        routes=[
            Route("/auth/token", token, methods=["POST"]),
            Route("/orders/{order_id}/files/{file_id}", file),
        ]
    ), seen


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_the_fetcher_stores_a_matching_file_as_a_customer_attachment(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    case = await factory.case()
    event = announced_file(case)
    await apply(container, event)
    double, seen = order_intake_double(PDF)
    fetcher = CustomerFileFetcher(
        container.db, container.settings, container.attachments, transport=httpx.ASGITransport(app=double)
    )
    async with fetcher.client() as http:
        assert await fetcher.fetch_due(http) == 1
    assert seen == ["token:client_credentials:case-handling", "file:Bearer tok"]
    body = (await client.get(f"/cases/{case.id}", headers=staff(minter))).json()
    [attachment] = body["attachments"]
    assert attachment["id"] == event.data["file_id"] and attachment["origin"] == "customer"
    assert attachment["visibility"] == "customer" and attachment["sha256"] == hashlib.sha256(PDF).hexdigest()
    got = await client.get(f"/cases/{case.id}/attachments/{attachment['id']}/content", headers=staff(minter))
    assert got.content == PDF


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_the_fetcher_rejects_other_bytes_and_retries_a_refused_token(
    factory: Any, container: Container
) -> None:
    case = await factory.case()
    await apply(container, announced_file(case, PDF))
    double, _ = order_intake_double(b"%PDF-1.7\n" + b"Q" * 3000)  # same size, other bytes
    fetcher = CustomerFileFetcher(
        container.db, container.settings, container.attachments, transport=httpx.ASGITransport(app=double)
    )
    async with fetcher.client() as http:
        await fetcher.fetch_due(http)
    async with container.db.session() as s:
        fetch = (await s.execute(select(CustomerFileFetch))).scalar_one()
    assert fetch.status == CustomerFileFetchStatus.REJECTED.value and "SHA-256" in (fetch.last_error or "")
    assert await count_rows(container.db, Attachment) == 0
    assert await stored_keys(container.attachments) == []

    await apply(container, announced_file(case, PDF))
    refusing, _ = order_intake_double(PDF, token_ok=False)
    fetcher = CustomerFileFetcher(
        container.db, container.settings, container.attachments, transport=httpx.ASGITransport(app=refusing)
    )
    async with fetcher.client() as http:
        await fetcher.fetch_due(http)
    async with container.db.session() as s:
        pending = (
            await s.execute(select(CustomerFileFetch).where(CustomerFileFetch.status == "pending"))
        ).scalar_one()
    assert pending.attempts == 1 and "refused a service token" in (pending.last_error or "")
    assert await count_rows(container.db, Attachment) == 0
