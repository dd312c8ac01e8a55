"""What the staff console needs of the API (issue 26, section 2): queues with counts, search,
the service level, the actions a case offers, and the live feed of case changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from case_handling.bootstrap import Container
from case_handling.cases import service
from case_handling.cases.feed import CaseFeed
from case_handling.cases.models import Case, CaseEntry
from case_handling.main import create_application
from case_handling.settings import StaffTeam
from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer, TokenMinter

from .conftest import Factory
from .test_cases_api import problem, staff, supervisor


async def _age(container: Container, case: Case, **changes: Any) -> None:
    async with container.db.session() as session:
        row = await session.get(Case, case.id)
        assert row is not None
        for name, value in changes.items():
            setattr(row, name, value)
        session.add(row)
        await session.commit()


async def test_queues_and_their_counts(
    client: httpx.AsyncClient, factory: Factory, minter: TokenMinter, container: Container
) -> None:
    container.settings.teams = {
        "housing": StaffTeam(members=["staff-1@casebridge.example"], categories=["tenancy"]),
        "firms": StaffTeam(members=["staff-2"], categories=["corporate"]),
    }
    me, other = staff(minter, "staff-1"), staff(minter, "staff-2")
    tenancy = await factory.case()
    corporate = await factory.case(
        product={**_product(), "category": "corporate", "title": "Company formation"}
    )
    mine = await factory.case()
    assert (await client.post(f"/cases/{mine.id}/claim", headers=me)).status_code == 200
    theirs = await factory.case()
    assert (await client.post(f"/cases/{theirs.id}/claim", headers=other)).status_code == 200
    # Opened long ago and never touched: past the service level of 2 working days.
    await _age(container, tenancy, created_at=datetime.now(UTC) - timedelta(days=10))
    # A case with its own due date: that date decides.
    await _age(container, corporate, due_at=datetime.now(UTC) - timedelta(hours=1))
    done = await factory.case()
    await _age(container, done, status="closed", created_at=datetime.now(UTC) - timedelta(days=30))

    counts = await client.get("/cases/queues", headers=me)
    assert counts.status_code == 200, counts.text
    assert counts.json() == {"open": 4, "unassigned": 2, "mine": 1, "team": 3, "overdue": 2}
    # Counts are the caller's: "mine" and "team" follow the token.
    assert (await client.get("/cases/queues", headers=other)).json() | {} == {
        "open": 4,
        "unassigned": 2,
        "mine": 1,
        "team": 1,
        "overdue": 2,
    }
    # Nobody's team: an empty team queue, not everything.
    assert (await client.get("/cases/queues", headers=staff(minter, "staff-3"))).json()["team"] == 0

    async def ids(params: dict[str, str], who: dict[str, str] = me) -> set[str]:
        listed = await client.get("/cases", headers=who, params=params)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["total"] == len(body["items"])
        return {c["id"] for c in body["items"]}

    assert await ids({"queue": "unassigned"}) == {tenancy.id, corporate.id}
    assert await ids({"queue": "mine"}) == {mine.id}
    assert await ids({"queue": "team"}) == {tenancy.id, mine.id, theirs.id}
    assert await ids({"queue": "overdue"}) == {tenancy.id, corporate.id}
    assert await ids({"queue": "open"}) == {tenancy.id, corporate.id, mine.id, theirs.id}
    assert await ids({"queue": "open", "q": "company"}) == {corporate.id}

    listed = (await client.get("/cases", headers=me, params={"queue": "overdue"})).json()["items"]
    by_id = {c["id"]: c for c in listed}
    assert by_id[tenancy.id]["overdue"] is True and by_id[tenancy.id]["customer_name"] == "Ada Lovelace"
    due = datetime.fromisoformat(by_id[tenancy.id]["sla_due_at"])
    assert due == service.add_working_days(datetime.fromisoformat(by_id[tenancy.id]["created_at"]), 2)
    fresh = (await client.get(f"/cases/{mine.id}", headers=me)).json()
    assert fresh["overdue"] is False and fresh["sla_due_at"] > fresh["created_at"]

    # Counts within a search.
    searched = (await client.get("/cases/queues", headers=me, params={"q": "company"})).json()
    assert searched == {"open": 1, "unassigned": 1, "mine": 0, "team": 0, "overdue": 1}


def _product() -> dict[str, Any]:
    return {
        "product_id": "7c7d1f3e-0000-4000-8000-000000000001",
        "title": "Tenancy agreement review",
        "description": "A lawyer reviews your tenancy agreement.",
        "deliverables": ["Written review"],
        "category": "tenancy",
        "price": "149.00",
        "currency": "EUR",
        "version": 1,
    }


def test_working_days_skip_the_weekend() -> None:
    friday = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    assert service.add_working_days(friday, 2) == datetime(2026, 12, 8, 10, 0, tzinfo=UTC)  # Tuesday
    saturday = friday + timedelta(days=1)
    assert service.add_working_days(saturday, 1) == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # Monday
    tuesday = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
    assert service.add_working_days(tuesday, -2) == friday


async def test_search_by_customer_product_or_order_number(
    client: httpx.AsyncClient, factory: Factory, minter: TokenMinter
) -> None:
    me = staff(minter)
    grace = await factory.case(
        customer={"customer_id": "c-2", "full_name": "Grace Hopper", "email": "grace@navy.example"}
    )
    other = await factory.case()

    async def found(q: str) -> set[str]:
        listed = await client.get("/cases", headers=me, params={"q": q})
        assert listed.status_code == 200, listed.text
        return {c["id"] for c in listed.json()["items"]}

    assert await found("grace hopper") == {grace.id}
    assert await found("NAVY.example") == {grace.id}
    assert await found(grace.order_id) == {grace.id}
    assert await found(grace.order_id[:8].upper()) == {grace.id}  # as the pages show it
    assert await found("tenancy agreement") == {grace.id, other.id}
    assert await found("nobody-like-this") == set()


async def test_a_case_offers_only_what_its_state_and_the_rules_allow(
    client: httpx.AsyncClient, factory: Factory, minter: TokenMinter
) -> None:
    me, other = staff(minter, "staff-1"), staff(minter, "staff-2")
    case = await factory.case()

    async def offered(who: dict[str, str]) -> list[str]:
        read = await client.get(f"/cases/{case.id}", headers=who)
        assert read.status_code == 200, read.text
        actions: list[str] = read.json()["allowed_actions"]
        return actions

    new_case = ["claim", "analysis", "communication", "attach", "update"]
    assert await offered(me) == new_case
    assert await offered(supervisor(minter)) == [*new_case[:1], "assign", *new_case[1:], "cancel"]

    claimed = await client.post(f"/cases/{case.id}/claim", headers=me)
    assert claimed.json()["allowed_actions"] == ["start", "analysis", "communication", "attach", "update"]
    assert await offered(other) == []  # someone else's case: nothing to do but read it
    started = await client.post(f"/cases/{case.id}/start", headers=me)
    assert started.json()["allowed_actions"] == ["analysis", "communication", "attach", "update", "solution"]
    proposed = await client.post(
        f"/cases/{case.id}/solution", headers=me, json={"summary": "Rent rise capped", "text": "Details."}
    )
    assert "close" in proposed.json()["allowed_actions"]
    closed = await client.post(f"/cases/{case.id}/close", headers=me)
    assert closed.json()["allowed_actions"] == []


async def test_bad_queue_and_search_parameters_are_422_with_the_field(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    me = staff(minter)
    for path, params, field in [
        ("/cases", {"queue": "everything"}, "query.queue"),
        ("/cases", {"q": ""}, "query.q"),
        ("/cases/queues", {"q": "x" * 201}, "query.q"),
        ("/cases/queues", {"q": ""}, "query.q"),
        ("/cases/stream", {"after": "-1"}, "query.after"),
        ("/cases/stream", {"after": str(2**31)}, "query.after"),
    ]:
        body = problem(await client.get(path, headers=me, params=params), 422)
        assert body["errors"][0]["field"] == field, body
    body = problem(await client.get("/cases/stream", headers=me | {"Last-Event-ID": "yesterday"}), 422)
    assert body["errors"][0]["field"] == "Last-Event-ID"


async def test_queues_and_the_live_feed_are_for_staff_only(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    for path in ("/cases/queues", "/cases/stream", "/cases?queue=mine"):
        problem(await client.get(path), 401)
        problem(await client.get(path, headers=minter.headers("cust-1", "customer")), 403)
        problem(await client.get(path, headers=minter.headers("svc", "service")), 403)


# --- the live feed ------------------------------------------------------------------------


class Stream:
    """An SSE client reading events from a real server."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            fields: dict[str, Any] = {}
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        return fields
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value
            raise AssertionError("the stream ended")

        return await asyncio.wait_for(read(), timeout=timeout)

    async def connected(self, timeout: float = 30.0) -> None:
        async def read() -> None:
            async for line in self.lines:
                if line.startswith(": connected"):
                    return
            raise AssertionError("the stream ended")

        await asyncio.wait_for(read(), timeout=timeout)


@asynccontextmanager
async def served(container: Container, minter: TokenMinter) -> AsyncIterator[ApiServer]:
    apps: list[FastAPI] = []

    def make() -> FastAPI:
        apps.append(create_application(container.settings, container))
        return apps[-1]

    server = ApiServer(make, free_port())
    await server.start()
    apps[-1].state.token_verifier = minter.verifier()  # after the lifespan set the real one
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def connect(
    server: ApiServer, headers: dict[str, str], path: str = "/cases/stream"
) -> AsyncIterator[Stream]:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(60)) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        await stream.connected()  # from here on nothing is missed
        yield stream


async def test_a_new_case_and_each_change_arrive_on_the_live_feed(
    container: Container, factory: Factory, minter: TokenMinter
) -> None:
    container.settings.stream_poll_seconds = 0.02
    me = staff(minter)
    before = await factory.case()  # before connecting: not replayed on a fresh connect
    async with served(container, minter) as server:
        async with connect(server, me) as stream:
            # Opened by "the worker" (the factory writes as the consumer does, not via this api).
            case = await factory.case()
            opened = await stream.next_event()
            assert opened["event"] == "case"
            assert opened["data"]["case_id"] == case.id and opened["data"]["kind"] == "opened"
            assert opened["data"]["status"] == "new" and opened["data"]["version"] >= 1
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                assert (await http.post(f"/cases/{case.id}/claim", headers=me)).status_code == 200
            claimed = await stream.next_event()
            assert claimed["data"]["version"] == 2  # the page holding version 1 knows it is stale
            assert (claimed["data"]["case_id"], claimed["data"]["kind"]) == (case.id, "assigned")
            assert int(claimed["id"]) > int(opened["id"])
            last_seen = opened["id"]

        # Reconnecting after the first event: what was missed comes first, then live.
        async with connect(server, me | {"Last-Event-ID": last_seen}) as stream:
            again = await stream.next_event()
            assert again["id"] == claimed["id"]
            await factory.case()
            live = await stream.next_event()
            assert live["data"]["kind"] == "opened" and int(live["id"]) > int(again["id"])
        # ``after`` does the same for clients that cannot set the header.
        async with connect(server, me, f"/cases/stream?after={last_seen}") as stream:
            assert (await stream.next_event())["id"] == claimed["id"]
    assert before.id != case.id


async def test_a_late_commit_with_a_lower_number_is_still_delivered(
    container: Container, factory: Factory
) -> None:
    """Entry ids are taken at insert, not at commit (PostgreSQL): an id the poller skipped over is
    looked for again, and an entry already handed over is not handed over twice."""
    feed = CaseFeed(container.db, poll_seconds=0.01)
    queue = feed.subscribe()
    try:
        await asyncio.wait_for(feed.started.wait(), timeout=30)
        case = await factory.case()
        opened = await asyncio.wait_for(queue.get(), timeout=30)
        assert opened.case_id == case.id and opened.kind == "opened"

        async def entry(entry_id: int, kind: str) -> None:
            async with container.db.session() as session:
                session.add(CaseEntry(id=entry_id, case_id=case.id, kind=kind, status="new"))
                await session.commit()

        # Numbers far above the sequence's next, so PostgreSQL's sequence never hands them out.
        await entry(opened.id + 1000, "later")  # committed first, with the higher number
        assert (await asyncio.wait_for(queue.get(), timeout=30)).kind == "later"
        await entry(opened.id + 999, "earlier")  # committed second, with the lower number
        assert (await asyncio.wait_for(queue.get(), timeout=30)).kind == "earlier"
        # The next case (below the gap's end on PostgreSQL, above it on SQLite) comes next:
        # the two before it are not handed over again.
        nxt_case = await factory.case()
        nxt = await asyncio.wait_for(queue.get(), timeout=30)
        assert (nxt.kind, nxt.case_id) == ("opened", nxt_case.id)
    finally:
        feed.unsubscribe(queue)
        await feed.close()
