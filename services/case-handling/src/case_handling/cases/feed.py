"""The live feed of case changes (Server-Sent Events) for the staff console's queue.

Cases are opened by the worker process (the order consumer) and changed by any
api process; every change writes a timeline entry. Each api process runs one
poller while anyone is connected: it reads the entries newer than the last it
saw (one indexed query for all connections) and hands each to every open
stream. It looks when a commit may have happened (casebridge_shared.commit_watch:
PostgreSQL's NOTIFY sent with the outbox rows every case event writes, SQLite's
files) and at least once a second.

Entry ids are handed out when a row is written, not when it commits: on
PostgreSQL an entry with a lower id can become visible after a higher one. An id
skipped over is therefore looked for again for ``GAP_SECONDS`` before it is given
up (a rolled-back transaction leaves such a hole for good). The console treats an
event as "something changed: read the queue again", so an event that arrives late
costs nothing more than a second read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime

import structlog
from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, func
from sqlalchemy import select as select_core

from case_handling.cases.models import Case, CaseEntry
from casebridge_shared.commit_watch import CommitWatch
from casebridge_shared.db import Database, table_of
from casebridge_shared.outbox import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)

RETRY_MILLISECONDS = 2000
GAP_SECONDS = 30.0
_BATCH = 1000
_MAX_GAPS = 10_000  # a burst of rolled-back ids must not grow the bookkeeping without bound

_ENTRIES = table_of(CaseEntry)
_CASES = table_of(Case)
_COLUMNS = (
    _ENTRIES.c.id,
    _ENTRIES.c.case_id,
    _ENTRIES.c.kind,
    _ENTRIES.c.status,
    _ENTRIES.c.at,
    _ENTRIES.c.author_name,
    _CASES.c.version,
)
_NEWER_THAN = (
    select_core(*_COLUMNS)
    .join_from(_ENTRIES, _CASES, _ENTRIES.c.case_id == _CASES.c.id)
    .where(_ENTRIES.c.id > bindparam("after"))
    .order_by(_ENTRIES.c.id)
    .limit(_BATCH)
)


class CaseChange(BaseModel):
    """One change on one case: what the console needs to know that the queue is stale."""

    model_config = ConfigDict(from_attributes=True)

    id: int  # the timeline entry's id: the stream's event id
    case_id: str
    kind: str  # opened, assigned, status_changed, analysis, communication, solution, ...
    status: str  # the case's status after the change
    at: datetime
    author_name: str | None
    # The case's version when the change was read (at least the change's own): a page holding
    # an older one knows its copy is stale.
    version: int


class CaseFeed:
    def __init__(self, db: Database, *, poll_seconds: float) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self._streams: set[asyncio.Queue[CaseChange]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_id: int | None = None
        self._gaps: dict[int, float] = {}  # id skipped over -> when it was first missed
        self._sent: set[int] = set()  # ids above the lowest open gap already handed over
        # Set once the poller knows where "new" starts.
        self.started = asyncio.Event()

    @property
    def connected(self) -> int:
        return len(self._streams)

    def subscribe(self) -> asyncio.Queue[CaseChange]:
        queue: asyncio.Queue[CaseChange] = asyncio.Queue()
        self._streams.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="case-feed")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[CaseChange]) -> None:
        self._streams.discard(queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        watch = CommitWatch(self.db, NOTIFY_CHANNEL, poll_seconds=self.poll_seconds)
        try:
            while self._streams:
                mark = await watch.before_look()
                try:
                    got = await self._poll_once()
                except Exception as exc:  # the database may be down for a moment: keep serving
                    log.warning("case_feed.poll_failed", error=str(exc)[:300])
                    got = 0
                if got < _BATCH:
                    await watch.wait(mark)
        finally:
            await watch.close()
            # A stream that subscribes after this point starts a new poller; one that
            # subscribed while this one was ending is picked up by the next subscribe.
            self._last_id = None
            self.started.clear()

    def _low(self, now: float) -> int:
        assert self._last_id is not None
        for gap, since in list(self._gaps.items()):
            if now - since > GAP_SECONDS:
                del self._gaps[gap]
        low = min(self._gaps) - 1 if self._gaps else self._last_id
        self._sent = {i for i in self._sent if i > low}
        return low

    async def _poll_once(self) -> int:
        async with self.db.session() as session:
            if self._last_id is None:
                newest = (await session.execute(select_core(func.max(_ENTRIES.c.id)))).scalar()
                self._last_id = int(newest or 0)
                self._gaps.clear()
                self._sent.clear()
                self.started.set()
                return 0
            now = time.monotonic()
            rows = (await session.execute(_NEWER_THAN, {"after": self._low(now)})).all()
        for row in rows:
            if row.id in self._sent:
                continue
            self._gaps.pop(row.id, None)
            if row.id > self._last_id:
                if len(self._gaps) < _MAX_GAPS:
                    for missing in range(self._last_id + 1, min(row.id, self._last_id + 1 + _MAX_GAPS)):
                        self._gaps.setdefault(missing, now)
                self._last_id = row.id
            self._sent.add(row.id)
            change = CaseChange.model_validate(row)
            for queue in self._streams:
                queue.put_nowait(change)
        return len(rows)


def format_event(change: CaseChange) -> str:
    data = json.dumps(change.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {change.id}\nevent: case\ndata: {data}\n\n"


async def _since(db: Database, after: int) -> list[CaseChange]:
    async with db.session() as session:
        rows = (await session.execute(_NEWER_THAN, {"after": after})).all()
    return [CaseChange.model_validate(r) for r in rows]


async def stream(
    feed: CaseFeed, last_event_id: int | None, *, heartbeat_seconds: float
) -> AsyncIterator[str]:
    """The SSE body for one connection: what was missed since ``last_event_id`` (at most one
    batch: the console reads the queue again on reconnecting anyway), then live."""
    queue = feed.subscribe()  # before reading the backlog: nothing can fall in between
    try:
        with contextlib.suppress(TimeoutError):  # the database down: the stream still opens
            await asyncio.wait_for(feed.started.wait(), timeout=heartbeat_seconds)
        yield f"retry: {RETRY_MILLISECONDS}\n: connected\n\n"
        sent: set[int] = set()
        if last_event_id is not None:
            for change in await _since(feed.db, last_event_id):
                sent.add(change.id)
                yield format_event(change)
        while True:
            try:
                change = await asyncio.wait_for(queue.get(), timeout=heartbeat_seconds)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if change.id in sent:
                sent.discard(change.id)  # already sent from the backlog
                continue
            yield format_event(change)
    finally:
        feed.unsubscribe(queue)
