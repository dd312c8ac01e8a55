"""The worker's consumer of casebridge.cases.v1 and the document fetcher (issue 4, section 3)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from casebridge_shared import testing
from casebridge_shared.auth import Principal, Role
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.db import utcnow
from casebridge_shared.events import CASES_TOPIC, CloudEvent
from casebridge_shared.inbox import list_dead_letters
from casebridge_shared.problems import PROBLEM_BASE
from casebridge_shared.testing.object_storage import STORAGE_BACKENDS, stored_keys
from order_intake.bootstrap import CONSUMER_GROUP, Container
from order_intake.db import inbox, outbox
from order_intake.documents import service as documents
from order_intake.documents.fetcher import DocumentFetcher
from order_intake.documents.models import Document
from order_intake.identity.models import User
from order_intake.orders.models import Order, OrderCreate, OrderProgress
from order_intake.orders.service import cancel_order, place_order

from .conftest import Factory


async def publish(broker: EmbeddedBroker, *events: CloudEvent | bytes, key: str = "one-partition") -> None:
    await testing.publish(broker.bootstrap_servers, CASES_TOPIC, *events, key=key)


async def consume_until(container: Container, condition: Callable[[], Awaitable[bool]]) -> None:
    await testing.consume_until(container.consumer, condition)


class Case:
    """Builds case events for one order, as case-handling would publish them."""

    def __init__(self, order: Order) -> None:
        self.order = order
        self.case_id = str(uuid.uuid4())
        self.version = 0
        self.clock = datetime.now(UTC)

    def event(self, kind: str, status: str, **data: Any) -> CloudEvent:
        self.version += 1
        self.clock += timedelta(seconds=1)
        payload = {
            "case_id": self.case_id,
            "order_id": self.order.id,
            "customer_id": self.order.customer_id,
            "status": status,
            "at": self.clock.isoformat(),
            "added_by_a_later_release": True,
        } | data
        return CloudEvent(
            id=str(uuid.uuid4()),
            source="/casebridge/case-handling",
            type=f"casebridge.cases.{kind}.v1",
            time=self.clock,
            partitionkey=self.case_id,
            aggregateversion=self.version,
            data=payload,
        )


async def new_order(factory: Factory) -> Order:
    customer = await factory.customer()
    product = await factory.product()
    principal = customer_principal(customer.id)
    async with factory.container.uow() as uow:
        order, _ = await place_order(
            uow, principal, OrderCreate(product_id=product.id, description="help"), None
        )
    return order


def customer_principal(subject: str) -> Principal:
    return Principal(subject=subject, roles=frozenset({Role.CUSTOMER}))


async def load(container: Container, order_id: str) -> tuple[Order, list[OrderProgress]]:
    async with container.db.session() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        rows = await s.execute(
            select(OrderProgress).where(OrderProgress.order_id == order_id).order_by(OrderProgress.id)
        )
        return order, list(rows.scalars())


async def order_events(container: Container, order_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The order's events in order-intake's outbox, oldest first: (type, data)."""
    table = outbox.outbox
    async with container.db.session() as s:
        rows = await s.execute(
            select(table.c.event_type, table.c.payload)
            .where(table.c.message_key == order_id)
            .order_by(table.c.id)
        )
        return [(t, json.loads(p)["data"]) for t, p in rows]


async def inbox_count(container: Container) -> int:
    async with container.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(inbox.inbox))).scalar_one())


async def test_case_events_move_the_order_forward_once_and_never_back(
    broker: EmbeddedBroker, container: Container, factory: Factory
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    order = await new_order(factory)
    case = Case(order)
    pdf = b"%PDF-1.4 the advice"
    events = [
        case.event("case-opened", "new", product_title="Contract review", product_category="contracts"),
        case.event("case-assigned", "assigned", assignee_id="u1", assignee_name="Sam Staff"),
        case.event("status-changed", "in_progress", previous_status="assigned"),
        case.event("analysis-recorded", "in_progress"),
        case.event(
            "communication-recorded",
            "in_progress",
            channel="email",
            direction="inbound",
            occurred_at=case.clock.isoformat(),
            customer_visible_summary=None,
        ),
        case.event(
            "attachment-added",
            "in_progress",
            attachment_id=str(uuid.uuid4()),
            visibility="internal",
            sha256="0" * 64,
            size=10,
            media_type="application/pdf",
            file_name=None,
        ),
        case.event(
            "attachment-added",
            "in_progress",
            attachment_id=str(uuid.uuid4()),
            visibility="customer",
            sha256=hashlib.sha256(pdf).hexdigest(),
            size=len(pdf),
            media_type="application/pdf",
            file_name="advi\u202ece.pdf",  # a right-to-left override is dropped (issue 25)
        ),
        case.event(
            "solution-proposed", "solution_proposed", solution_summary="Void", solution_text="Because."
        ),
        # A stale "assigned" (a reassignment seen late) must not move the order back.
        case.event("case-assigned", "assigned", assignee_id="u2", assignee_name=None),
        case.event("case-closed", "closed"),
        # After completion, a cancellation changes nothing.
        case.event("case-cancelled", "cancelled", reason="too late"),
    ]
    await publish(broker, *events, key=case.case_id)

    async def all_applied() -> bool:
        return await inbox_count(container) == len(events)

    await consume_until(container, all_applied)
    stored, progress = await load(container, order.id)
    assert stored.status == "completed"
    assert stored.solution_summary == "Void" and stored.solution_text == "Because."
    assert [p.title for p in progress] == [
        "Order received",
        "Order accepted",
        "Expert assigned",
        "Work started",
        "Legal analysis done",
        "You contacted us by email",
        "Document added",
        "Solution ready",
        "Expert assigned",
        "Order completed",
    ]
    assert [p.status for p in progress][-3:] == ["solution_proposed", "solution_proposed", "completed"]
    async with container.db.session() as s:
        docs = list((await s.execute(select(Document))).scalars())
    assert [(d.file_name, d.status) for d in docs] == [
        ("advice.pdf", "pending")
    ]  # the internal one is not here
    version = stored.version
    # Completion is published (issue 25): the order's state, as of the change, for the ledger.
    published = await order_events(container, order.id)
    assert [t for t, _ in published] == [
        "casebridge.orders.order-placed.v1",
        "casebridge.orders.order-completed.v1",
    ]
    assert published[-1][1]["status"] == "completed" and published[-1][1]["version"] == version

    # Redelivery from the start of the topic changes nothing.
    await testing.reset_group_offsets(broker.bootstrap_servers, CONSUMER_GROUP, CASES_TOPIC)
    other = Case(await new_order(factory))
    await publish(broker, other.event("case-opened", "new", product_title="X", product_category="y"))

    async def other_applied() -> bool:
        return await inbox_count(container) == len(events) + 1

    await consume_until(container, other_applied)
    again, progress_again = await load(container, order.id)
    assert again.version == version and len(progress_again) == len(progress)
    assert (await load(container, other.order.id))[0].status == "accepted"


async def test_customer_cancellation_wins_over_later_case_events(
    broker: EmbeddedBroker, container: Container, factory: Factory
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    order = await new_order(factory)
    async with container.uow() as uow:
        await cancel_order(uow, customer_principal(order.customer_id), order.id, "changed my mind", None)
    case = Case(order)
    events = [
        case.event("case-opened", "new", product_title="Contract review", product_category="contracts"),
        case.event("case-cancelled", "cancelled", reason="the customer cancelled the order"),
    ]
    await publish(broker, *events, key=case.case_id)

    async def applied() -> bool:
        return await inbox_count(container) == 2

    await consume_until(container, applied)
    stored, progress = await load(container, order.id)
    assert stored.status == "cancelled" and stored.cancel_reason == "changed my mind"
    assert "Order accepted" not in [p.title for p in progress]
    # Only the customer's cancellation is published: the case's changed nothing.
    published = [(t, d["cancelled_by"]) for t, d in (await order_events(container, order.id))[1:]]
    assert published == [("casebridge.orders.order-cancelled.v1", "customer")]


async def test_a_case_cancelled_by_staff_publishes_the_order_s_cancellation(
    broker: EmbeddedBroker, container: Container, factory: Factory
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    order = await new_order(factory)
    case = Case(order)
    events = [
        case.event("case-opened", "new", product_title="Contract review", product_category="contracts"),
        case.event("case-cancelled", "cancelled", reason="conflict of interest"),
    ]
    await publish(broker, *events, key=case.case_id)

    async def applied() -> bool:
        return await inbox_count(container) == 2

    await consume_until(container, applied)
    stored, _ = await load(container, order.id)
    assert stored.status == "cancelled"
    [*_, (kind, data)] = await order_events(container, order.id)
    assert kind == "casebridge.orders.order-cancelled.v1"
    assert (data["status"], data["reason"], data["cancelled_by"]) == (
        "cancelled",
        "conflict of interest",
        "staff",
    )
    assert data["version"] == stored.version


async def test_poison_case_events_are_dead_lettered_and_the_next_one_applied(
    broker: EmbeddedBroker, container: Container, factory: Factory
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    order = await new_order(factory)
    case = Case(order)
    wrong_schema = case.event("case-opened", "new", product_category="contracts")  # no product_title
    future = case.event("case-opened", "new", product_title="X", product_category="y")
    future = future.model_copy(update={"type": "casebridge.cases.case-opened.v2"})
    unknown_order = Case(order)
    stray = unknown_order.event("case-opened", "new", product_title="X", product_category="y")
    stray.data["order_id"] = str(uuid.uuid4())
    bad_id = case.event(
        "attachment-added",
        "new",
        attachment_id="../../etc/passwd",
        visibility="customer",
        sha256="0" * 64,
        size=1,
        media_type="text/plain",
        file_name="x.txt",
    )
    too_long = case.event(
        "solution-proposed", "solution_proposed", solution_summary="Void", solution_text="x" * 100_001
    )
    forged = case.event("case-cancelled", "cancelled", reason="forged")
    forged = forged.model_copy(update={"source": "/casebridge/order-intake"})
    good = case.event("case-opened", "new", product_title="Contract review", product_category="contracts")
    await publish(
        broker,
        b"\xff not json",
        json.dumps({"specversion": "1.0"}).encode(),
        wrong_schema,
        future,
        stray,
        bad_id,
        too_long,
        forged,
        good,
    )

    async def good_applied() -> bool:
        return (await load(container, order.id))[0].status == "accepted"

    await consume_until(container, good_applied)
    letters = await list_dead_letters(container.db, inbox, CONSUMER_GROUP)
    errors = [row["error"] for row in letters]
    assert len(errors) == 8, errors
    assert errors[0].startswith("invalid JSON")
    assert errors[1].startswith("not a CloudEvent")
    assert errors[2].startswith("payload does not match") and "product_title" in errors[2]
    assert "unknown version of casebridge.cases.case-opened" in errors[3]
    assert "which is not here" in errors[4]
    assert errors[5].startswith("payload does not match") and "attachment_id" in errors[5]
    # Issue 25: longer than case-handling's API allows; and a case event not from case-handling.
    assert errors[6].startswith("payload does not match") and "solution_text" in errors[6]
    assert errors[7] == (
        "event type casebridge.cases.case-cancelled.v1 from source /casebridge/order-intake; "
        "only /casebridge/case-handling may publish it"
    )
    stored, _ = await load(container, order.id)
    assert stored.solution_text is None and stored.status == "accepted"


# -- documents ----------------------------------------------------------------


async def announced(container: Container, order: Order, data: bytes, **overrides: Any) -> Document:
    values: dict[str, Any] = {
        "attachment_id": str(uuid.uuid4()),
        "order_id": order.id,
        "case_id": str(uuid.uuid4()),
        "file_name": "Gutachten \u2013 final.pdf",  # a non-ASCII name
        "media_type": "application/pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "at": utcnow(),
    } | overrides
    async with container.db.write_session() as s:
        assert await documents.announce(s, **values)
        await s.commit()
        document = await s.get(Document, values["attachment_id"])
    assert document is not None
    return document


class FakeCaseHandling:
    """Stands in for case-handling's download endpoint (the real one is used in tests/)."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers = answers
        self.requests: list[Request] = []

    def app(self) -> Starlette:
        async def content(request: Request) -> Response:
            self.requests.append(request)
            status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            return Response(body, status_code=status, media_type="application/pdf")

        return Starlette(routes=[Route("/cases/{case_id}/attachments/{attachment_id}/content", content)])


async def doc(container: Container, document_id: str) -> Document:
    async with container.db.session() as s:
        found = await s.get(Document, document_id)
    assert found is not None
    return found


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_fetcher_retries_with_backoff_then_stores_the_checked_copy(
    container: Container, factory: Factory, client: httpx.AsyncClient, app: FastAPI
) -> None:
    order = await new_order(factory)
    data = b"%PDF-1.4 " + b"x" * 200_000
    document = await announced(container, order, data)
    remote = FakeCaseHandling([(503, b"down"), (200, data)])
    fetcher = DocumentFetcher(
        container.db,
        container.keys,
        container.settings,
        container.documents,
        transport=httpx.ASGITransport(remote.app()),
    )
    async with fetcher._client() as http:
        assert await fetcher.fetch_due(http) == 1
        first = await doc(container, document.id)
        assert first.status == "pending" and first.attempts == 1 and "503" in (first.last_error or "")
        assert first.next_attempt_at > utcnow()  # backing off: not due again yet
        assert await fetcher.fetch_due(http) == 0
        async with container.db.write_session() as s:  # the clock moves on
            row = await s.get(Document, document.id)
            assert row is not None
            row.next_attempt_at = utcnow() - timedelta(seconds=1)
            await s.commit()
        assert await fetcher.fetch_due(http) == 1
    stored = await doc(container, document.id)
    assert stored.status == "available" and stored.available_at is not None
    auth = remote.requests[0].headers["authorization"]
    principal = await app.state.token_verifier.verify(auth.removeprefix("Bearer "))
    assert principal.subject == "service:order-intake" and "service" in principal.roles

    owner = await _owner(container, order)
    r = await client.get(f"/orders/{order.id}/documents/{document.id}", headers=factory.auth(owner))
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/pdf"
    assert "filename*=utf-8''Gutachten%20%E2%80%93%20final.pdf" in r.headers["content-disposition"]
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["etag"] == f'"{document.sha256}"'
    testing.assert_security_headers(r)  # nosniff, no framing, sandboxed (issue 25)


async def _owner(container: Container, order: Order) -> User | None:
    async with container.db.session() as s:
        return await s.get(User, order.customer_id)


@pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)
async def test_a_mismatching_or_oversized_file_is_rejected_and_never_kept(
    container: Container, factory: Factory, client: httpx.AsyncClient
) -> None:
    order = await new_order(factory)
    data = b"%PDF-1.4 the real advice"
    wrong = await announced(container, order, data)
    longer = await announced(container, order, data)
    damaged = await announced(container, order, data)
    # case-handling's own copy no longer matches its hash: rejected, not retried for ever.
    damaged_problem = json.dumps({"type": PROBLEM_BASE + "stored-file-damaged", "status": 500}).encode()
    for document, status, body in (
        (wrong, 200, b"%PDF-1.4 the fake advice"),
        (longer, 200, data + b" and more"),
        (damaged, 500, damaged_problem),
    ):
        remote = FakeCaseHandling([(status, body)])
        fetcher = DocumentFetcher(
            container.db,
            container.keys,
            container.settings,
            container.documents,
            transport=httpx.ASGITransport(remote.app()),
        )
        async with fetcher._client() as http:
            await fetcher.fetch(http, await doc(container, document.id))
        rejected = await doc(container, document.id)
        assert rejected.status == "rejected", rejected.last_error
    assert await stored_keys(container.documents) == []
    owner = await _owner(container, order)
    r = await client.get(f"/orders/{order.id}/documents/{wrong.id}", headers=factory.auth(owner))
    assert r.status_code == 409 and r.json()["state"] == "rejected"
    assert await documents.requeue_rejected(container.db, wrong.id) == 1
    assert (await doc(container, wrong.id)).status == "pending"


async def test_document_endpoints_answer_bad_requests_clearly(
    container: Container, factory: Factory, client: httpx.AsyncClient
) -> None:
    order = await new_order(factory)
    document = await announced(container, order, b"data")
    owner = await _owner(container, order)
    stranger = await factory.customer()
    staff = await factory.user(Role.STAFF)
    department = await factory.user(Role.DEPARTMENT, department="finance")
    base = f"/orders/{order.id}/documents"

    r = await client.get(base, headers=factory.auth(owner))
    assert r.status_code == 200 and [d["status"] for d in r.json()] == ["pending"]
    assert (await client.get(base, headers=factory.auth(staff))).status_code == 200
    assert (await client.get(base)).status_code == 401
    assert (await client.get(base, headers=factory.auth(department))).status_code == 403
    for path in (base, f"{base}/{document.id}"):
        r = await client.get(path, headers=factory.auth(stranger))
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = await client.get(f"{base}/{document.id}", headers=factory.auth(owner))
    assert r.status_code == 409 and r.json()["state"] == "pending"  # not yet copied
    r = await client.get(f"{base}/{uuid.uuid4()}", headers=factory.auth(owner))
    assert r.status_code == 404
    r = await client.get(f"/orders/{uuid.uuid4()}/documents", headers=factory.auth(owner))
    assert r.status_code == 404


async def test_a_run_finds_its_orders_in_one_query_and_writes_its_steps_together(
    container: Container, factory: Factory
) -> None:
    from order_intake.progress import service as progress
    from order_intake.progress.events import PAYLOAD_MODELS

    orders = [await new_order(factory) for _ in range(4)]
    cases = [Case(order) for order in orders]
    events = [c.event("case-opened", "new", product_title="Will", product_category="family") for c in cases]
    events.append(cases[0].event("case-assigned", "assigned", assignee_id="u1", assignee_name="Sam"))
    run = [(e, PAYLOAD_MODELS[e.type].model_validate(e.data)) for e in events]
    with testing.statements_sent(container.db) as sent:
        async with container.uow() as uow:
            await progress.before_run(uow, run)
            for cloud_event, payload in run:
                await progress.HANDLERS[cloud_event.type](uow, cloud_event, payload)
            await uow.commit()
    reads = [s for s in sent if s.startswith("SELECT") and "FROM orders" in s]
    steps = [s for s in sent if s.startswith("INSERT INTO order_progress")]
    assert len(reads) == 1, reads  # one look-up for the run, none per event
    assert len(steps) == 1, steps  # five entries, one statement
    for order in orders:
        stored, entries = await load(container, order.id)
        assert stored.status == ("in_progress" if order is orders[0] else "accepted")
        assert [e.title for e in entries][-1] == (
            "Expert assigned" if order is orders[0] else "Order accepted"
        )


async def test_the_fetcher_started_while_the_database_refuses_connections_waits_and_carries_on(
    container: Container, factory: Factory
) -> None:
    """Issue 25: it loaded its keys before its loop, so a database away at start ended the worker."""
    if container.db.dialect != "postgresql":
        pytest.skip("refuses PostgreSQL connections (run with CASEBRIDGE_TEST_POSTGRES_URL)")
    from order_intake.identity.keys import KeyStore, signing_keys_box

    order = await new_order(factory)
    data = b"%PDF-1.4 fetched after the outage"
    document = await announced(container, order, data)
    # Not loaded yet: the first pass loads them.
    keys = KeyStore(container.db, signing_keys_box(container.settings), grace=timedelta(days=1))
    remote = FakeCaseHandling([(200, data)])
    fetcher = DocumentFetcher(
        container.db,
        keys,
        container.settings,
        container.documents,
        transport=httpx.ASGITransport(remote.app()),
    )
    failed: list[BaseException] = []
    fetch_due = fetcher.fetch_due

    async def counted(http: httpx.AsyncClient) -> int:
        try:
            return await fetch_due(http)
        except Exception as exc:
            failed.append(exc)
            raise

    fetcher.fetch_due = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    async with testing.connections_refused(container.db.url):
        await testing.terminate_connections(container.db.url)
        task = asyncio.create_task(fetcher.run(stop))
        try:
            await testing.wait_until(lambda: len(failed) >= 3, timeout=30, message="failed passes")
            assert not task.done()
        except BaseException:
            stop.set()
            raise
    try:

        async def stored() -> bool:
            return (await doc(container, document.id)).status == "available"

        await testing.wait_until(stored, timeout=30, message="the document stored once the database is back")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
