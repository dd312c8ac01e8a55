"""In-app notifications and the live stream (SSE) for staff apps (issue 5, section 2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer, TokenMinter
from notifier.bootstrap import Container
from notifier.main import create_application
from notifier.notifications import feed as feed_module
from notifier.notifications.models import Kind
from notifier.notifications.service import Alert, notify

from .conftest import People

_counter = 0


async def tell(container: Container, *recipients: str, kind: Kind = Kind.CASE_OPENED) -> None:
    global _counter
    _counter += 1
    alert = Alert(
        kind=kind,
        dedupe_key=f"test-{_counter}",
        case_id=f"case-{_counter}",
        order_id=f"order-{_counter}",
        title=f"Alert {_counter}",
        body="Something happened.",
        at=datetime.now(UTC),
    )
    async with container.db.write_session() as session:
        await notify(session, list(recipients), alert)
        await session.commit()


async def test_my_notifications_unread_first_with_counts(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    me, colleague = await people.add("staff"), await people.add("staff")
    for _ in range(3):
        await tell(container, me.user_id, colleague.user_id)
    listed = (await client.get("/notifications", headers=people.headers(me))).json()
    assert (listed["total"], listed["unread"], listed["stream_position"]) == (3, 3, 3)
    assert [n["seq"] for n in listed["items"]] == [3, 2, 1]
    first = listed["items"][2]["id"]

    read = await client.post(f"/notifications/{first}/read", headers=people.headers(me))
    assert read.status_code == 200 and read.json()["read_at"] is not None
    again = await client.post(f"/notifications/{first}/read", headers=people.headers(me))
    assert again.json()["read_at"] == read.json()["read_at"]  # reading twice changes nothing

    listed = (await client.get("/notifications", headers=people.headers(me))).json()
    assert [n["seq"] for n in listed["items"]] == [3, 2, 1] and listed["unread"] == 2
    unread = (await client.get("/notifications?unread_only=true", headers=people.headers(me))).json()
    assert [n["seq"] for n in unread["items"]] == [3, 2]
    count = (await client.get("/notifications/unread-count", headers=people.headers(me))).json()
    assert count == {"unread": 2, "stream_position": 3}

    assert (await client.post("/notifications/read-all", headers=people.headers(me))).json() == {
        "marked_read": 2
    }
    assert (await client.get("/notifications/unread-count", headers=people.headers(me))).json()["unread"] == 0
    # The colleague's are untouched.
    assert (await client.get("/notifications/unread-count", headers=people.headers(colleague))).json()[
        "unread"
    ] == 3


async def test_someone_elses_notification_is_not_found(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    me, other = await people.add("staff"), await people.add("staff")
    await tell(container, other.user_id)
    theirs = (await client.get("/notifications", headers=people.headers(other))).json()["items"][0]["id"]
    response = await client.post(f"/notifications/{theirs}/read", headers=people.headers(me))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.post("/notifications/999999/read", headers=people.headers(me))).status_code == 404


async def test_cursor_pages_return_each_notification_once_while_new_ones_arrive(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    me, colleague = await people.add("staff"), await people.add("staff")
    for _ in range(7):
        await tell(container, me.user_id, colleague.user_id)
    auth = people.headers(me)
    for n in (2, 5):  # two read ones: they come after the unread, still newest first
        (
            await client.post(f"/notifications/{await _id_of(client, auth, n)}/read", headers=auth)
        ).raise_for_status()
    r = await client.get("/notifications", params={"limit": 2}, headers=auth)
    assert r.links["first"]["url"] == "/notifications?limit=2"
    seen: list[int] = []
    while True:
        assert r.status_code == 200, r.text
        seen += [n["seq"] for n in r.json()["items"]]
        await tell(container, me.user_id)  # new alerts while the app pages: ahead of the reader
        if "next" not in r.links:
            assert r.json()["next_cursor"] is None
            break
        assert r.links["next"]["url"].endswith("cursor=" + r.json()["next_cursor"])
        r = await client.get(r.links["next"]["url"], headers=auth)
    assert seen == [7, 6, 4, 3, 1, 5, 2]  # each once, in order, though four pages' worth were added
    # The filter goes on to the next page, and its cursor is refused without it.
    r = await client.get("/notifications", params={"unread_only": "true", "limit": 3}, headers=auth)
    assert "unread_only=true" in r.links["next"]["url"]
    cursor = r.json()["next_cursor"]
    refused = await client.get("/notifications", params={"cursor": cursor}, headers=auth)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "query.cursor"
    rest = await client.get(r.links["next"]["url"], headers=auth)
    unread = [n["seq"] for n in r.json()["items"] + rest.json()["items"]]
    assert unread[:3] == [11, 10, 9] and len(unread) == len(set(unread)) and 5 not in unread


async def _id_of(client: httpx.AsyncClient, auth: dict[str, str], seq: int) -> int:
    items = (await client.get("/notifications", params={"limit": 200}, headers=auth)).json()["items"]
    return next(int(n["id"]) for n in items if n["seq"] == seq)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/notifications"),
        ("GET", "/notifications/unread-count"),
        ("POST", "/notifications/read-all"),
        ("POST", "/notifications/1/read"),
        ("GET", "/notifications/stream"),
        ("GET", "/me/preferences"),
    ],
)
async def test_staff_only(client: httpx.AsyncClient, people: People, method: str, path: str) -> None:
    anonymous = await client.request(method, path)
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/problem+json"
    customer = await client.request(method, path, headers=people.headers("c-1", "customer"))
    assert customer.status_code == 403


async def test_bad_paging_and_ids_are_explained(client: httpx.AsyncClient, people: People) -> None:
    me = people.headers("s-1", "staff")
    for path in (
        "/notifications?limit=0",
        "/notifications?limit=201",
        "/notifications?offset=-1",
        "/notifications?unread_only=perhaps",
        "/notifications?cursor=not-one",
        "/notifications?cursor=" + "x" * 1001,
    ):
        response = await client.get(path, headers=me)
        assert response.status_code == 422, path
        assert response.json()["errors"][0]["field"]
    assert (await client.post("/notifications/abc/read", headers=me)).status_code == 422
    bad_resume = await client.get("/notifications/stream", headers=me | {"Last-Event-ID": "yesterday"})
    assert bad_resume.status_code == 422 and bad_resume.json()["errors"][0]["field"] == "Last-Event-ID"


async def test_numbers_beyond_the_columns_are_a_422_not_a_500(
    client: httpx.AsyncClient, people: People
) -> None:
    me = people.headers("s-1", "staff")
    huge = "99999999999999999999"
    for path, field in (
        (f"/notifications/{huge}/read", "path.notification_id"),
        (f"/notifications/{2**31}/read", "path.notification_id"),  # the id column is an INTEGER
        (f"/notifications?offset={huge}", "query.offset"),
        (f"/notifications/stream?after={2**31}", "query.after"),
    ):
        method = "POST" if path.endswith("/read") else "GET"
        response = await client.request(method, path, headers=me)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["field"] == field
    beyond = await client.get("/notifications/stream", headers=me | {"Last-Event-ID": str(2**31)})
    assert beyond.status_code == 422 and beyond.json()["errors"][0]["field"] == "Last-Event-ID"


# --- the live stream -------------------------------------------------------------------------------


class Stream:
    """An SSE client reading events from a real server."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            fields: dict[str, Any] = {}
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        return fields
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value
            raise AssertionError("the stream ended")

        return await asyncio.wait_for(read(), timeout=timeout)

    async def next_comment(self, timeout: float = 30.0) -> str:
        async def read() -> str:
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments.append(line)
                    return line
            raise AssertionError("the stream ended")

        return await asyncio.wait_for(read(), timeout=timeout)


@asynccontextmanager
async def served(container: Container, minter: TokenMinter) -> AsyncIterator[ApiServer]:
    server = ApiServer(
        lambda: create_application(container.settings, container, minter.verifier()), free_port()
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def connect(server: ApiServer, headers: dict[str, str]) -> AsyncIterator[Stream]:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(60)) as http,
        http.stream("GET", "/notifications/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        await stream.next_comment()  # connected: from here on nothing is missed
        yield stream


async def test_stream_delivers_live_and_a_reconnect_gets_exactly_what_was_missed(
    container: Container, people: People, minter: TokenMinter
) -> None:
    me, other = await people.add("staff"), await people.add("staff")
    await tell(container, me.user_id)  # before connecting: not replayed on a fresh connect
    async with served(container, minter) as server:
        async with connect(server, people.headers(me)) as stream:
            await tell(container, other.user_id)  # someone else's: never on my stream
            await tell(container, me.user_id)
            event = await stream.next_event()
            assert event["event"] == "notification" and event["id"] == "2"
            assert event["data"]["seq"] == 2 and event["data"]["kind"] == "case_opened"
            last_seen = event["id"]

        # Offline for a while: three alerts meanwhile.
        for _ in range(3):
            await tell(container, me.user_id)

        async with connect(server, people.headers(me) | {"Last-Event-ID": last_seen}) as stream:
            missed = [await stream.next_event() for _ in range(3)]
            assert [e["id"] for e in missed] == ["3", "4", "5"]
            await tell(container, me.user_id)
            live = await stream.next_event()
            assert live["id"] == "6"  # no repeat, no gap

        # ``after`` does the same for clients that cannot set the header.
        async with connect(server, people.headers(me)) as _fresh:
            pass
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(60)) as http,
            http.stream("GET", "/notifications/stream?after=4", headers=people.headers(me)) as response,
        ):
            stream = Stream(response)
            assert [(await stream.next_event())["id"] for _ in range(2)] == ["5", "6"]


async def test_each_api_replica_streams_to_its_own_clients(
    container: Container, people: People, minter: TokenMinter
) -> None:
    alice, bob = await people.add("staff"), await people.add("staff")
    async with (
        served(container, minter) as one,
        served(container, minter) as two,
        connect(one, people.headers(alice)) as a,
        connect(two, people.headers(bob)) as b,
    ):
        await tell(container, alice.user_id, bob.user_id)  # written by the worker, not by either api
        got_a, got_b = await asyncio.gather(a.next_event(), b.next_event())
        assert got_a["data"]["title"] == got_b["data"]["title"]
        assert (got_a["id"], got_b["id"]) == ("1", "1")


async def test_stream_sends_heartbeats(container: Container, people: People, minter: TokenMinter) -> None:
    container.settings.stream_heartbeat_seconds = 0.2
    me = await people.add("staff")
    async with served(container, minter) as server, connect(server, people.headers(me)) as stream:
        assert await stream.next_comment() == ": heartbeat"
        await tell(container, me.user_id)
        assert (await stream.next_event())["id"] == "1"


async def test_a_commit_reaches_the_stream_without_waiting_for_a_query_poll(
    container: Container, people: People, minter: TokenMinter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the worker's NOTIFY wakes the poller. SQLite: the poller sees the files change."""
    # Far longer than the wait below: only a notice of the commit can bring it in time.
    monkeypatch.setattr(feed_module, "QUERY_AT_LEAST_EVERY_SECONDS", 120)
    container.settings.stream_heartbeat_seconds = 120
    me = await people.add("staff")
    async with served(container, minter) as server, connect(server, people.headers(me)) as stream:
        await tell(container, me.user_id)
        assert (await stream.next_event(timeout=30))["id"] == "1"
