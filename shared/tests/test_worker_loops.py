"""Worker loops outlive every fault: ``periodic`` against a database that refuses connections for real."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from casebridge_shared import testing
from casebridge_shared.db import Database
from casebridge_shared.worker import Backoff, periodic


@contextlib.asynccontextmanager
async def _refusing_database(
    tmp_path: Path,
) -> AsyncIterator[tuple[Database, contextlib.AbstractAsyncContextManager[None]]]:
    """A database and a context inside which new connections to it fail.

    PostgreSQL: ALLOW_CONNECTIONS false and every connection terminated. SQLite: its
    folder gone ("unable to open database file"), there again afterwards.
    """
    async with testing.scratch_database(tmp_path, "cbt_loops") as scratch:
        if scratch.dialect == "postgresql":

            @contextlib.asynccontextmanager
            async def refused() -> AsyncIterator[None]:
                async with testing.connections_refused(scratch.url):
                    await testing.terminate_connections(scratch.url)
                    yield

            yield scratch, refused()
            return
        folder = tmp_path / "gone"
        folder.mkdir()
        database = Database(f"sqlite+aiosqlite:///{folder / 'db.sqlite3'}")
        await database.ping()
        await database.dispose()

        @contextlib.asynccontextmanager
        async def vanished() -> AsyncIterator[None]:
            shutil.rmtree(folder)
            await database.dispose()  # the pooled connections go; new ones cannot open the file
            try:
                yield
            finally:
                folder.mkdir()

        try:
            yield database, vanished()
        finally:
            await database.dispose()


async def test_a_loop_rides_out_a_database_that_refuses_connections_and_carries_on(tmp_path: Path) -> None:
    async with _refusing_database(tmp_path) as (database, refused):
        calls = {"failed": 0, "done": 0}

        async def step() -> bool:
            try:
                await database.ping()
            except Exception:
                calls["failed"] += 1
                raise
            calls["done"] += 1
            return False

        stop = asyncio.Event()
        loop = asyncio.create_task(
            periodic("test.loop", step, stop, idle_seconds=0.01, backoff=Backoff(0.01, 0.05))
        )
        try:
            await testing.wait_until(lambda: calls["done"] >= 1, message="a first pass")
            async with refused:
                await testing.wait_until(lambda: calls["failed"] >= 5, message="failing passes")
                assert not loop.done()  # the errors did not end it
            done_before = calls["done"]
            await testing.wait_until(lambda: calls["done"] > done_before, message="a pass after the outage")
            assert not loop.done()
        finally:
            stop.set()
            await asyncio.wait_for(loop, timeout=10)
        assert loop.exception() is None


async def test_a_bug_in_a_step_is_logged_and_retried_not_the_end_of_the_loop() -> None:
    tries: list[int] = []

    async def step() -> bool:
        tries.append(1)
        if len(tries) < 4:
            raise ValueError("a bug")
        return len(tries) < 6  # more waiting: again at once

    stop = asyncio.Event()
    loop = asyncio.create_task(periodic("test.bug", step, stop, idle_seconds=30, backoff=Backoff(0.01, 0.02)))
    await testing.wait_until(lambda: len(tries) >= 6, message="passes after the failures")
    assert not loop.done()
    stop.set()
    await asyncio.wait_for(loop, timeout=10)


def test_backoff_doubles_up_to_its_bound_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.2


async def test_a_wake_cuts_the_idle_wait_short() -> None:
    passes: list[int] = []
    wake = asyncio.Event()

    async def step() -> bool:
        passes.append(1)
        return False

    stop = asyncio.Event()
    loop = asyncio.create_task(periodic("test.wake", step, stop, idle_seconds=3600, wake=wake))
    await testing.wait_until(lambda: len(passes) == 1, message="the first pass")
    wake.set()
    await testing.wait_until(lambda: len(passes) == 2, message="a pass on the wake-up")
    stop.set()
    await asyncio.wait_for(loop, timeout=10)
