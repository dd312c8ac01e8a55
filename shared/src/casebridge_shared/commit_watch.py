"""Noticing other processes' commits cheaply, for an api process that serves live streams (SSE).

The worker writes, the api streams: the api must learn that something was committed
without querying in a tight loop. ``CommitWatch`` waits for the next sign of a commit:

- PostgreSQL: a ``NOTIFY`` on the channel, sent by the writer's transaction at commit
  (``casebridge_shared.db.notify_at_commit``), received on one listening connection;
- SQLite: a change in the database's files (``DatabaseFiles``: a ``stat`` every
  ``poll_seconds``, no query), which any commit by any process makes;
- either way, at least every ``at_least_every`` seconds: the safety net for a missed notice.

With the listening connection lost it falls back to waiting ``fallback_seconds``. The
caller's loop is: ``seen = await watch.before_look()``, query, ``await watch.wait(seen)``.
Taking ``seen`` *before* the query is what makes it exact: a commit after the look shows
as a change against ``seen`` (or a notice), so nothing is missed between look and wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

import asyncpg

from casebridge_shared.db import Database, DatabaseFiles, FileSignature

# Told of commits (NOTIFY) or seeing them (SQLite's files), a watcher still looks this often.
QUERY_AT_LEAST_EVERY_SECONDS = 1.0
# Told nothing and seeing nothing (the listening connection lost): it looks this often.
FALLBACK_SECONDS = 0.05


class CommitWatch:
    def __init__(
        self,
        db: Database,
        channel: str,
        *,
        poll_seconds: float,
        at_least_every: float = QUERY_AT_LEAST_EVERY_SECONDS,
        fallback_seconds: float = FALLBACK_SECONDS,
    ) -> None:
        self.db = db
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.at_least_every = at_least_every
        self.fallback_seconds = fallback_seconds
        self._files = DatabaseFiles.of(db)
        self._listener: asyncpg.Connection | None = None
        self._notified = asyncio.Event()

    async def __aenter__(self) -> CommitWatch:
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    async def before_look(self) -> FileSignature | None:
        """Call right before querying; pass the result to ``wait``."""
        if self._files is None and (self._listener is None or self._listener.is_closed()):
            # (Again) before looking: nothing committed after the look is missed.
            self._listener = await self.db.listen(self.channel, self._notified.set)
        self._notified.clear()
        return self._files.signature() if self._files is not None else None

    async def wait(self, seen: FileSignature | None) -> None:
        """Until a commit may have happened since ``before_look`` (or ``at_least_every`` passed)."""
        if self._files is not None and seen is not None:
            deadline = time.monotonic() + self.at_least_every
            while time.monotonic() < deadline:
                await asyncio.sleep(self.poll_seconds)
                if self._files.signature() != seen:
                    return
        elif self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notified.wait(), timeout=self.at_least_every)
        else:
            await asyncio.sleep(max(self.poll_seconds, self.fallback_seconds))
