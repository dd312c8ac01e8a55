"""The live order page: an SSE stream per open page that says "this order changed, fetch it again".

The worker (case events: timeline, status, solution; fetched documents) and the api
(cancel, edit, messages) change orders; every api process serves streams. One poller per
api process, running while anyone listens, looks at the watched orders only: one query
``SELECT id, status, version, updated_at FROM orders WHERE id IN (...)`` whenever
``CommitWatch`` sees a commit (PostgreSQL ``NOTIFY`` from ``orders.service.order_changed``,
SQLite's files) and at least once a second, and hands each changed order to its streams.
The fan-out goes through the database, so every replica serves its own clients.

Every change the customer can see goes through ``order_changed``, which moves the
order's ``updated_at`` (never to the same instant twice); so an order's state is
``(status, version, updated_at)`` and the event id says it. A reconnect with
``Last-Event-ID`` gets an event at once only if the order changed meanwhile: changes
collapse into one, which is all the page needs, since it fetches the order again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select

from casebridge_shared.commit_watch import QUERY_AT_LEAST_EVERY_SECONDS, CommitWatch
from casebridge_shared.db import Database, table_of
from order_intake.orders.models import Order
from order_intake.orders.service import ORDER_CHANGES_CHANNEL

log = structlog.get_logger(__name__)

RETRY_MILLISECONDS = 3000
_ORDERS = table_of(Order)
_CHUNK = 500  # watched orders per query (bound parameters stay few)


@dataclass(frozen=True)
class OrderState:
    order_id: str
    status: str
    version: int
    updated_at: datetime

    @property
    def event_id(self) -> str:
        return f"{self.version}-{int(self.updated_at.timestamp() * 1_000_000)}"

    def event(self) -> str:
        data = json.dumps(
            {"order_id": self.order_id, "status": self.status, "updated_at": self.updated_at.isoformat()},
            separators=(",", ":"),
        )
        return f"id: {self.event_id}\nevent: order-updated\ndata: {data}\n\n"


async def _states(db: Database, order_ids: list[str]) -> dict[str, OrderState]:
    found: dict[str, OrderState] = {}
    async with db.session() as session:
        for start in range(0, len(order_ids), _CHUNK):
            rows = await session.execute(
                select(_ORDERS.c.id, _ORDERS.c.status, _ORDERS.c.version, _ORDERS.c.updated_at).where(
                    _ORDERS.c.id.in_(order_ids[start : start + _CHUNK])
                )
            )
            for row in rows:
                found[row.id] = OrderState(row.id, row.status, row.version, row.updated_at)
    return found


async def current_state(db: Database, order_id: str) -> OrderState | None:
    return (await _states(db, [order_id])).get(order_id)


class OrderWatch:
    """The api process's watcher of the orders its streams show (one poller, shared)."""

    def __init__(self, db: Database, *, poll_seconds: float) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        # Told of commits (NOTIFY) or seeing them (SQLite's files), it still looks this often.
        self.at_least_every = QUERY_AT_LEAST_EVERY_SECONDS
        self._streams: dict[str, set[asyncio.Queue[OrderState]]] = {}
        self._known: dict[str, OrderState] = {}
        self._task: asyncio.Task[None] | None = None
        # Set when the app shuts down: every stream ends (uvicorn waits for open responses).
        self.closing = asyncio.Event()

    @property
    def connected(self) -> int:
        return sum(len(queues) for queues in self._streams.values())

    def subscribe(self, order_id: str) -> asyncio.Queue[OrderState]:
        queue: asyncio.Queue[OrderState] = asyncio.Queue()
        self._streams.setdefault(order_id, set()).add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="order-watch")
        return queue

    def unsubscribe(self, order_id: str, queue: asyncio.Queue[OrderState]) -> None:
        queues = self._streams.get(order_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._streams[order_id]
                self._known.pop(order_id, None)

    async def close(self) -> None:
        self.closing.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        watch = CommitWatch(
            self.db, ORDER_CHANGES_CHANNEL, poll_seconds=self.poll_seconds, at_least_every=self.at_least_every
        )
        async with watch:
            while self._streams:
                seen = await watch.before_look()
                try:
                    await self._poll_once()
                except Exception as exc:  # the database may be down for a moment: keep serving
                    log.warning("order_watch.poll_failed", error=str(exc)[:300])
                await watch.wait(seen)

    async def _poll_once(self) -> None:
        states = await _states(self.db, sorted(self._streams))
        for order_id, state in states.items():
            if self._known.get(order_id) == state:
                continue
            self._known[order_id] = state
            for queue in self._streams.get(order_id, ()):
                queue.put_nowait(state)


async def stream(
    watch: OrderWatch, order_id: str, last_event_id: str | None, *, heartbeat_seconds: float
) -> AsyncIterator[str]:
    """The SSE body of one open order page: ``order-updated`` whenever the order changes.

    Without ``Last-Event-ID`` the first event is the order's state now (the page compares it
    with what it loaded); with it, an event comes at once only if the order changed since.
    """
    queue = watch.subscribe(order_id)  # before reading the state: nothing can fall in between
    closing = asyncio.ensure_future(watch.closing.wait())
    getting: asyncio.Future[OrderState] | None = None
    try:
        last = last_event_id
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        changed = await _state_or_none(watch.db, order_id)
        while not watch.closing.is_set():
            if changed is not None and changed.event_id != last:
                yield changed.event()
                last = changed.event_id
            getting = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getting, closing}, timeout=heartbeat_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if getting in done:
                changed = getting.result()
                continue
            if closing in done:
                return
            yield ": heartbeat\n\n"
            # The safety net: a change the poller has not handed over yet.
            changed = await _state_or_none(watch.db, order_id)
    finally:
        for future in (getting, closing):
            if future is not None:
                future.cancel()
        watch.unsubscribe(order_id, queue)


async def _state_or_none(db: Database, order_id: str) -> OrderState | None:
    try:
        return await current_state(db, order_id)
    except Exception as exc:  # the database down a moment: keep the stream, look at the next beat
        log.warning("order_stream.read_failed", error=str(exc)[:300])
        return None
