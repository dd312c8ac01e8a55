"""Issue 26: the live order page's stream (GET /orders/{id}/stream, Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from casebridge_shared.auth import Role
from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer
from order_intake.bootstrap import Container
from order_intake.documents import service as documents
from order_intake.documents.models import Document
from order_intake.identity.models import User
from order_intake.orders.live import OrderWatch
from order_intake.progress import service as progress
from order_intake.progress.events import CaseAssigned

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"


class Stream:
    """Reads an SSE response: events (id, event, data) and comment lines."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.retry: str | None = None

    async def next(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next event, or ``{"comment": ...}`` for a comment line (heartbeat)."""

        async def read() -> dict[str, Any]:
            fields: dict[str, Any] = {}
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        return fields
                    continue
                if line.startswith(":"):
                    return {"comment": line}
                name, _, value = line.partition(": ")
                if name == "retry":
                    self.retry = value
                    continue
                fields[name] = json.loads(value) if name == "data" else value
            return {"ended": True}

        return await asyncio.wait_for(read(), timeout=timeout)

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        while True:
            item = await self.next(timeout)
            if "comment" not in item:
                return item


@asynccontextmanager
async def served(app: FastAPI, *, grace: int | None = None) -> AsyncIterator[ApiServer]:
    server = ApiServer(lambda: app, free_port(), lifespan=False, shutdown_grace_seconds=grace)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def connect(
    server: ApiServer, order_id: str, headers: dict[str, str]
) -> AsyncIterator[tuple[httpx.Response, Stream]]:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(60)) as http,
        http.stream("GET", f"/orders/{order_id}/stream", headers=headers) as response,
    ):
        yield response, Stream(response)


async def _order(client: httpx.AsyncClient, factory: Factory) -> tuple[dict[str, Any], dict[str, str]]:
    customer = await factory.customer()
    product = await factory.product()
    headers = factory.auth(customer)
    r = await client.post("/orders", json={"product_id": product.id, "description": "help"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json(), headers


async def _assign(container: Container, order: dict[str, Any]) -> None:
    """What the worker does with a case-assigned event (another connection, its own commit)."""
    case = CaseAssigned.model_validate(
        {
            "case_id": "case-1",
            "order_id": order["id"],
            "customer_id": order["customer_id"],
            "status": "assigned",
            "at": datetime.now(UTC).isoformat(),
            "assignee_name": "Lena Lawyer",
        }
    )
    async with container.uow() as uow:
        await progress.case_assigned(uow, None, case)  # type: ignore[arg-type]
        await uow.commit()


async def test_the_customer_sees_each_change_of_their_order_live(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    order, headers = await _order(client, factory)
    async with served(app) as server, connect(server, order["id"], headers) as (response, stream):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        first = await stream.next_event()  # the order as it is now
        assert stream.retry == "3000"
        assert first["event"] == "order-updated"
        assert first["data"] == {
            "order_id": order["id"],
            "status": "submitted",
            "updated_at": first["data"]["updated_at"],
        }

        await _assign(container, order)  # the worker: a new timeline step
        assigned = await stream.next_event()
        assert assigned["id"] != first["id"]
        assert assigned["data"]["updated_at"] >= first["data"]["updated_at"]
        shown = (await client.get(f"/orders/{order['id']}", headers=headers)).json()
        assert shown["progress"][-1]["title"] == "Expert assigned"
        assert assigned["data"]["status"] == shown["status"]

        staff = factory.auth(await factory.user(Role.STAFF))
        r = await client.post(f"/orders/{order['id']}/cancel", headers=staff)  # by the api itself
        assert r.status_code == 200, r.text
        cancelled = await stream.next_event()
        assert cancelled["data"]["status"] == "cancelled"


async def test_a_document_becoming_available_reaches_the_stream(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    order, headers = await _order(client, factory)
    async with container.uow() as uow:
        await documents.announce(
            uow.session,
            attachment_id="att-1",
            order_id=order["id"],
            case_id="case-1",
            file_name="advice.pdf",
            media_type="application/pdf",
            size=10,
            sha256="0" * 64,
            at=datetime.now(UTC),
        )
        await uow.commit()
    async with served(app) as server, connect(server, order["id"], headers) as (_response, stream):
        first = await stream.next_event()
        async with container.db.session() as s:
            document = await s.get(Document, "att-1")
        assert document is not None
        await documents.mark_available(container.db, document)  # the fetcher, in the worker
        changed = await stream.next_event()
        assert changed["id"] != first["id"]


async def test_a_reconnect_with_last_event_id_gets_only_what_changed(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    container.settings.stream_heartbeat_seconds = 0.3
    order, headers = await _order(client, factory)
    async with served(app) as server:
        async with connect(server, order["id"], headers) as (_r, stream):
            seen = (await stream.next_event())["id"]
        # Nothing changed: a heartbeat, no event.
        async with connect(server, order["id"], headers | {"Last-Event-ID": seen}) as (_r, stream):
            assert "comment" in await stream.next()
            assert "comment" in await stream.next()
        await _assign(container, order)  # while the page was away
        async with connect(server, order["id"], headers | {"Last-Event-ID": seen}) as (_r, stream):
            missed = await stream.next()
            assert missed.get("event") == "order-updated" and missed["id"] != seen


async def test_only_the_orders_customer_or_staff_may_listen(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    order, _headers = await _order(client, factory)
    stranger = factory.auth(await factory.customer())
    staff = factory.auth(await factory.user(Role.STAFF))
    async with served(app) as server:
        async with connect(server, order["id"], stranger) as (response, _stream):
            assert response.status_code == 404
            assert response.headers["content-type"] == PROBLEM
        async with connect(server, "no-such-order", staff) as (response, _stream):
            assert response.status_code == 404
        async with connect(server, order["id"], {}) as (response, _stream):
            assert response.status_code == 401
        async with connect(server, order["id"], staff) as (response, stream):
            assert response.status_code == 200
            assert (await stream.next_event())["data"]["order_id"] == order["id"]
        too_long = staff | {"Last-Event-ID": "9" * 65}
        async with connect(server, order["id"], too_long) as (response, _stream):
            assert response.status_code == 422 and response.headers["content-type"] == PROBLEM


async def test_a_commit_reaches_the_stream_without_waiting_for_a_query_poll(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    """PostgreSQL: the worker's NOTIFY wakes the watcher. SQLite: the watcher sees the files change."""
    watch: OrderWatch = app.state.order_watch
    watch.at_least_every = 120  # far longer than the wait below: only a notice can bring it in time
    container.settings.stream_heartbeat_seconds = 120
    order, headers = await _order(client, factory)
    async with served(app) as server, connect(server, order["id"], headers) as (_r, stream):
        await stream.next_event()
        await _assign(container, order)
        assert (await stream.next_event(timeout=30))["data"]["status"] != "submitted"


async def test_streams_end_when_the_api_stops(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    order, headers = await _order(client, factory)
    server = ApiServer(lambda: app, free_port(), lifespan=False, shutdown_grace_seconds=1)
    await server.start()
    try:
        async with connect(server, order["id"], headers) as (_r, stream):
            await stream.next_event()
            started = time.monotonic()
            await server.stop()  # would wait forever for the open stream without the grace period
            assert time.monotonic() - started < 30
            try:
                ended = await stream.next(timeout=30)
            except httpx.HTTPError:
                ended = {"ended": True}  # the connection cut: the browser reconnects
            assert ended == {"ended": True}
    finally:
        await server.stop()


async def test_the_browser_listens_with_its_session_cookie(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    order, _headers = await _order(client, factory)
    customer_email = await _email_of(container, order["customer_id"])
    async with (
        served(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(60)) as http,
    ):
        r = await http.post("/session", json={"email": customer_email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        # EventSource sends no headers of its own: the cookie alone (GET needs no CSRF token).
        async with http.stream("GET", f"/orders/{order['id']}/stream") as response:
            assert response.status_code == 200
            assert (await Stream(response).next_event())["data"]["order_id"] == order["id"]


async def _email_of(container: Container, user_id: str) -> str:
    async with container.db.session() as s:
        user = await s.get(User, user_id)
    assert user is not None
    return user.email
