"""Group commit: concurrent requests share transactions; one request's error stays its own."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from casebridge_shared import testing
from casebridge_shared.db import Database, transaction_scoped
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.outbox import UnitOfWork, outbox_tables
from casebridge_shared.problems import NotFound

metadata = MetaData()
OUTBOX = outbox_tables(metadata)
NOTES = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("text", String(100), nullable=False),
)
request_name: contextvars.ContextVar[str] = contextvars.ContextVar("request_name", default="none")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.scratch_database(tmp_path, "cbt_group") as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database


def group(db: Database, max_batch: int = 64) -> GroupCommit:
    return GroupCommit(lambda: UnitOfWork(db, OUTBOX, "/test"), service="test", max_batch=max_batch)


async def stored(db: Database) -> dict[int, str]:
    async with db.session() as session:
        rows = await session.execute(select(NOTES.c.id, NOTES.c.text))
        return {row.id: row.text for row in rows}


def note(number: int, text: str | None = None) -> object:
    async def work(uow: UnitOfWork) -> int:
        await uow.session.execute(insert(NOTES).values(id=number, text=text or f"note {number}"))
        count = await uow.session.scalar(select(func.count()).select_from(NOTES))
        return int(count or 0)

    return work


def shared_metric(suffix: str) -> float:
    return REGISTRY.get_sample_value(f"casebridge_group_commit_requests_{suffix}", {"service": "test"}) or 0.0


async def test_concurrent_requests_share_a_transaction_and_each_gets_its_own_answer(db: Database) -> None:
    writes = group(db)
    transactions_seen, requests_seen = shared_metric("count"), shared_metric("sum")
    answers = await asyncio.gather(*(writes.run(note(n)) for n in range(20)))  # type: ignore[arg-type]
    # All twenty were queued before the writer began: one transaction.
    assert writes.requests == 20
    assert writes.transactions == 1
    # Each request saw the ones before it in the same transaction, in arrival order.
    assert answers == list(range(1, 21))
    assert await stored(db) == {n: f"note {n}" for n in range(20)}
    # Operators see it too: one more transaction, shared by 20 requests.
    assert shared_metric("count") - transactions_seen == 1
    assert shared_metric("sum") - requests_seen == 20


async def test_a_request_alone_is_not_kept_waiting(db: Database) -> None:
    writes = group(db)
    for n in range(3):
        assert await writes.run(note(n)) == n + 1  # type: ignore[arg-type]
    assert writes.transactions == 3


async def test_batches_are_bounded(db: Database) -> None:
    writes = group(db, max_batch=4)
    await asyncio.gather(*(writes.run(note(n)) for n in range(13)))  # type: ignore[arg-type]
    assert writes.requests == 13
    assert writes.transactions == 4  # 4, 4, 4 and 1
    assert len(await stored(db)) == 13


async def test_a_failing_request_gets_its_error_and_nothing_of_it_stays(db: Database) -> None:
    writes = group(db)

    async def half_done_then_not_found(uow: UnitOfWork) -> int:
        await uow.session.execute(insert(NOTES).values(id=100, text="half written"))
        raise NotFound("no such customer")

    requests = [note(n) for n in range(5)] + [half_done_then_not_found] + [note(n) for n in range(5, 10)]
    answers = await asyncio.gather(*(writes.run(r) for r in requests), return_exceptions=True)  # type: ignore[arg-type]
    assert isinstance(answers[5], NotFound)
    assert all(isinstance(a, int) for i, a in enumerate(answers) if i != 5)
    assert await stored(db) == {n: f"note {n}" for n in range(10)}


def refuse_commit(session: object) -> None:
    raise IntegrityError("COMMIT", {}, RuntimeError("commit refused"))


async def test_a_shared_commit_that_fails_is_retried_request_by_request(db: Database) -> None:
    writes = group(db)

    def refuse_if_shared(session: Session) -> None:
        if session.info.get("requests", 0) > 1:
            refuse_commit(session)

    def counted(number: int) -> object:
        async def work(uow: UnitOfWork) -> int:
            sync = uow.session.sync_session
            sync.info["requests"] = sync.info.get("requests", 0) + 1
            if not event.contains(sync, "before_commit", refuse_if_shared):
                event.listen(sync, "before_commit", refuse_if_shared)
            return await note(number)(uow)  # type: ignore[operator, no-any-return]

        return work

    answers = await asyncio.gather(*(writes.run(counted(n)) for n in range(1, 5)))  # type: ignore[arg-type]
    # The shared commit was refused; each then ran and committed alone, in order.
    assert answers == [1, 2, 3, 4]
    assert writes.transactions == 4
    assert set(await stored(db)) == {1, 2, 3, 4}


async def test_a_request_whose_commit_fails_alone_gets_that_error(db: Database) -> None:
    writes = group(db)

    async def uncommittable(uow: UnitOfWork) -> int:
        event.listen(uow.session.sync_session, "before_commit", refuse_commit)
        await uow.session.execute(insert(NOTES).values(id=99, text="never"))
        return 99

    requests = [note(1), uncommittable, note(2)]
    answers = await asyncio.gather(*(writes.run(r) for r in requests), return_exceptions=True)  # type: ignore[arg-type]
    assert isinstance(answers[1], IntegrityError)
    assert answers[0] == 1 and answers[2] == 2
    assert set(await stored(db)) == {1, 2}


async def test_each_request_runs_in_its_own_context(db: Database) -> None:
    writes = group(db)
    seen: dict[str, str] = {}

    async def as_request(name: str) -> None:
        request_name.set(name)

        async def work(uow: UnitOfWork) -> None:
            seen[name] = request_name.get()

        await writes.run(work)

    await asyncio.gather(*(as_request(f"request-{n}") for n in range(6)))
    assert seen == {f"request-{n}": f"request-{n}" for n in range(6)}


async def test_a_request_cancelled_while_queued_is_not_run(db: Database) -> None:
    writes = group(db)
    blocker = asyncio.Event()

    async def first(uow: UnitOfWork) -> int:
        await blocker.wait()
        return await note(1)(uow)  # type: ignore[operator, no-any-return]

    running = asyncio.ensure_future(writes.run(first))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(writes.run(note(2)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    queued.cancel()
    blocker.set()
    assert await running == 1
    with pytest.raises(asyncio.CancelledError):
        await queued
    after = await writes.run(note(3))  # type: ignore[arg-type]
    assert after == 2
    assert set(await stored(db)) == {1, 3}


async def test_what_requests_will_look_up_is_looked_up_once_before_any_of_them_runs(db: Database) -> None:
    """``before_batch`` gets the needs of the batch's requests (those that named any), in the
    transaction they share and before the first of them runs; alone, a request gets its own."""
    batches: list[list[object]] = []

    async def look_up(uow: UnitOfWork, needs: list[object]) -> None:
        batches.append(needs)
        transaction_scoped(uow.session, "looked_up", set).update(needs)  # type: ignore[arg-type]

    def seen(number: int) -> object:
        async def work(uow: UnitOfWork) -> bool:
            await note(number)(uow)  # type: ignore[operator]
            return number in transaction_scoped(uow.session, "looked_up", set)

        return work

    writes = GroupCommit(lambda: UnitOfWork(db, OUTBOX, "/test"), service="test", before_batch=look_up)
    answers = await asyncio.gather(
        *(writes.run(seen(n), needs=n if n != 3 else None) for n in range(6))  # type: ignore[arg-type]
    )
    assert writes.transactions == 1
    assert batches == [[0, 1, 2, 4, 5]]
    assert answers == [True, True, True, False, True, True]
    assert await writes.run(seen(7), needs=7) is True  # type: ignore[arg-type]
    assert batches[-1] == [7]


async def test_a_batch_whose_look_up_fails_goes_again_request_by_request(db: Database) -> None:
    """The look-up is no request's own: if it fails for the batch, each request runs alone."""

    async def refuse_shared(uow: UnitOfWork, needs: list[object]) -> None:
        if len(needs) > 1:
            raise RuntimeError("look-up failed")

    writes = GroupCommit(lambda: UnitOfWork(db, OUTBOX, "/test"), service="test", before_batch=refuse_shared)
    answers = await asyncio.gather(*(writes.run(note(n), needs=n) for n in range(1, 5)))  # type: ignore[arg-type]
    assert answers == [1, 2, 3, 4]
    assert writes.transactions == 4
    assert set(await stored(db)) == {1, 2, 3, 4}
