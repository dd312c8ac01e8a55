"""Wait, cheaply, until another process may have committed: for live streams served by an api
process while the worker process writes.

On PostgreSQL a listening connection is woken by the NOTIFY a commit sends
(``notify_at_commit``); on SQLite the database's files change at every commit
(a ``stat`` every ``poll_seconds``, no query). Either way the caller still
queries at least every ``at_least_every`` seconds: the safety net for a notice
that was missed or a commit that sends none. Without a listening connection
(it could not be made) the caller polls every ``poll_seconds``.

Use::

    watch = CommitWatch(db, "casebridge_outbox", poll_seconds=0.05)
    try:
        while wanted:
            mark = await watch.mark()  # before the look: nothing committed after it is missed
            ...query what is new...
            await watch.wait(mark)
    finally:
        await watch.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from casebridge_shared.db import Database, DatabaseFiles, FileSignature

# Never query less often than this, whatever the notices say.
QUERY_AT_LEAST_EVERY_SECONDS = 1.0
# Told nothing and seeing nothing (no listening connection): query this often at least.
_MIN_POLL_SECONDS = 0.05


class CommitWatch:
    def __init__(
        self,
        db: Database,
        channel: str,
        *,
        poll_seconds: float,
        at_least_every: float = QUERY_AT_LEAST_EVERY_SECONDS,
    ) -> None:
        self.db = db
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.at_least_every = at_least_every
        self._files = DatabaseFiles.of(db)
        self._listener: asyncpg.Connection | None = None
        self._woken = asyncio.Event()

    async def mark(self) -> FileSignature | None:
        """Call before looking at the database; pass the result to ``wait``."""
        if self._files is None and (self._listener is None or self._listener.is_closed()):
            self._listener = await self.db.listen(self.channel, self._woken.set)
        self._woken.clear()
        return self._files.signature() if self._files is not None else None

    async def wait(self, mark: FileSignature | None) -> None:
        """Until a commit may have happened since ``mark`` (or the safety-net interval passed)."""
        if self._files is not None and mark is not None:
            deadline = time.monotonic() + self.at_least_every
            while time.monotonic() < deadline:
                await asyncio.sleep(self.poll_seconds)
                if self._files.signature() != mark:
                    return
        elif self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=self.at_least_every)
        else:
            await asyncio.sleep(max(self.poll_seconds, _MIN_POLL_SECONDS))

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
