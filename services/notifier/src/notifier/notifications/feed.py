"""The live stream of notifications (Server-Sent Events) for staff apps.

Each api process runs one poller (while anyone is connected) that reads
notifications newer than the last it saw, one query for all connections, and
hands each to the streams of its recipient. On PostgreSQL it looks when the
worker's commit of new notifications sends a NOTIFY; on SQLite when the
database's files show a commit (a ``stat`` every ``stream_poll_seconds``, no
query); and once a second in case a notice was missed. Every replica reads the same
database, so each delivers to its own clients: the fan-out goes through the
database, not process memory.

A stream's event id is the person's notification number (``seq``), which has
no holes and grows in commit order. A stream resumes after ``Last-Event-ID``
from the database, so a reconnect gets exactly what it missed. If the poller
hands over a number beyond the next expected one (a row with a lower global
id that committed later), the stream reads the gap from the database; the
same check runs with every heartbeat as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import structlog
from opentelemetry.trace import SpanKind
from sqlalchemy import bindparam, func
from sqlalchemy import select as select_core
from sqlmodel import select

from casebridge_shared.commit_watch import CommitWatch
from casebridge_shared.db import Database, table_of
from casebridge_shared.tracing import context_from, span_from
from notifier.notifications import service
from notifier.notifications.models import Notification, NotificationRead
from notifier.notifications.service import NEW_NOTIFICATIONS_CHANNEL

log = structlog.get_logger(__name__)

RETRY_MILLISECONDS = 2000
_BATCH = 1000


_TABLE = table_of(Notification)
_NEWER_THAN = (
    select_core(_TABLE).where(_TABLE.c.id > bindparam("last_id")).order_by(_TABLE.c.id).limit(_BATCH)
)

# How the poller learns of commits (NOTIFY, SQLite's files): casebridge_shared.commit_watch; it
# still queries this often, the safety net for a notice it missed.
QUERY_AT_LEAST_EVERY_SECONDS = 1.0


class NotificationFeed:
    def __init__(self, db: Database, *, poll_seconds: float) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self._streams: dict[str, set[asyncio.Queue[NotificationRead]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_id: int | None = None
        # Set once the poller knows where "new" starts: a stream opened before that
        # could miss a notification committed in between (until its next heartbeat).
        self.started = asyncio.Event()

    @property
    def connected(self) -> int:
        return sum(len(queues) for queues in self._streams.values())

    def subscribe(self, user_id: str) -> asyncio.Queue[NotificationRead]:
        queue: asyncio.Queue[NotificationRead] = asyncio.Queue()
        self._streams.setdefault(user_id, set()).add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="notification-feed")
        return queue

    def unsubscribe(self, user_id: str, queue: asyncio.Queue[NotificationRead]) -> None:
        queues = self._streams.get(user_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._streams[user_id]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        watch = CommitWatch(
            self.db,
            NEW_NOTIFICATIONS_CHANNEL,
            poll_seconds=self.poll_seconds,
            at_least_every=QUERY_AT_LEAST_EVERY_SECONDS,
        )
        async with watch:
            while self._streams:
                seen = await watch.before_look()
                try:
                    got = await self._poll_once()
                except Exception as exc:  # the database may be down for a moment: keep serving
                    log.warning("feed.poll_failed", error=str(exc)[:300])
                    got = 0
                if got >= _BATCH:
                    continue
                await watch.wait(seen)

    async def _poll_once(self) -> int:
        async with self.db.session() as session:
            if self._last_id is None:
                newest = (await session.exec(select(func.max(Notification.id)))).one()
                self._last_id = int(newest or 0)
                self.started.set()
                return 0
            # Rows, not ORM objects: the poller reads every notification written.
            rows = (await session.execute(_NEWER_THAN, {"last_id": self._last_id})).all()
        for row in rows:
            self._last_id = max(self._last_id, row.id)
            queues = self._streams.get(row.recipient_id)
            if queues:
                # The live stream's delivery, on the trace of the case event that made it.
                with span_from(
                    "deliver in_app",
                    context_from(row.traceparent),
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "casebridge.service": "notifier",
                        "casebridge.delivery.channel": "in_app",
                        "casebridge.notification.id": row.id,
                        "casebridge.streams": len(queues),
                    },
                ):
                    item = NotificationRead.model_validate(row)
                    for queue in queues:
                        queue.put_nowait(item)
        return len(rows)


def format_event(item: NotificationRead) -> str:
    data = json.dumps(item.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {item.seq}\nevent: notification\ndata: {data}\n\n"


async def _from_database(db: Database, user_id: str, after: int) -> list[NotificationRead]:
    found: list[NotificationRead] = []
    while True:
        async with db.session() as session:
            rows = await service.since(session, user_id, after)
        found.extend(NotificationRead.model_validate(r) for r in rows)
        if len(rows) < 500:
            return found
        after = rows[-1].seq


async def stream(
    feed: NotificationFeed, user_id: str, last_event_id: int | None, *, heartbeat_seconds: float
) -> AsyncIterator[str]:
    """The SSE body for one connection: what was missed since ``last_event_id``, then live."""
    queue = feed.subscribe(user_id)  # before reading the backlog: nothing can fall in between
    try:
        with contextlib.suppress(TimeoutError):  # the database down: the heartbeats catch up
            await asyncio.wait_for(feed.started.wait(), timeout=heartbeat_seconds)
        if last_event_id is None:
            async with feed.db.session() as session:
                _unread, last = await service.counts(session, user_id)
        else:
            last = last_event_id
        yield f"retry: {RETRY_MILLISECONDS}\n: connected at {last}\n\n"
        for item in await _from_database(feed.db, user_id, last):
            yield format_event(item)
            last = item.seq
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=heartbeat_seconds)
            except TimeoutError:
                yield ": heartbeat\n\n"
                missed = await _from_database(feed.db, user_id, last)
            else:
                if item.seq <= last:
                    continue  # already sent from the backlog
                missed = [item] if item.seq == last + 1 else await _from_database(feed.db, user_id, last)
            for each in missed:
                if each.seq > last:
                    yield format_event(each)
                    last = each.seq
    finally:
        feed.unsubscribe(user_id, queue)
