"""The SQLite adapter that runs each statement in one trip to aiosqlite's thread."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from casebridge_shared.db import Database
from casebridge_shared.sqlite_dbapi import sent_with_commit

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("body", Text, nullable=False, unique=True),
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """What each trip to the database thread ran, by name."""
    seen: Counter[str] = Counter()
    queued: Callable[..., Any] = aiosqlite.core.Connection._execute

    async def counted(self: aiosqlite.core.Connection, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        seen[getattr(fn, "__name__", repr(fn))] += 1
        return await queued(self, fn, *args, **kw)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return seen


async def test_a_statement_is_one_trip_with_its_rows(db: Database, trips: Counter[str]) -> None:
    async with db.write_session() as session:
        await session.execute(insert(notes), [{"body": "a"}, {"body": "b"}, {"body": "c"}])
        await session.commit()
    trips.clear()
    async with db.session() as session:
        result = await session.execute(select(notes.c.body).order_by(notes.c.id))
        assert result.scalars().all() == ["a", "b", "c"]
    # BEGIN, the SELECT: one trip each (the stock adapter: cursor, execute, fetch, close).
    assert trips["_run_statement"] == 2
    assert set(trips) <= {"_run_statement", "rollback", "commit"}


async def test_row_counts_last_row_ids_and_returning(db: Database) -> None:
    async with db.write_session() as session:
        first = await session.execute(insert(notes).values(body="first"))
        assert first.inserted_primary_key == (1,)
        second = await session.execute(insert(notes).values(body="second"))
        assert second.inserted_primary_key == (2,)
        changed = await session.execute(update(notes).where(notes.c.id >= 1).values(body=notes.c.body + "!"))
        assert changed.rowcount == 2  # type: ignore[attr-defined]
        third = insert(notes).values(body="third").returning(notes.c.id, notes.c.body)
        returned = await session.execute(third)
        assert returned.all() == [(3, "third")]
        await session.commit()
    async with db.session() as session:
        rows = (await session.execute(select(notes).order_by(notes.c.id))).all()
    assert rows == [(1, "first!"), (2, "second!"), (3, "third")]


async def test_rows_can_be_read_in_parts_and_streamed(db: Database) -> None:
    async with db.write_session() as session:
        await session.execute(insert(notes), [{"body": f"n{i}"} for i in range(10)])
        await session.commit()
    async with db.session() as session:
        result = await session.execute(select(notes.c.body).order_by(notes.c.id))
        assert result.fetchmany(3) == [("n0",), ("n1",), ("n2",)]
        assert result.fetchone() == ("n3",)
        assert len(result.fetchall()) == 6
        streamed = await session.stream(select(notes.c.body).order_by(notes.c.id))
        assert [row[0] async for row in streamed] == [f"n{i}" for i in range(10)]


async def test_errors_arrive_as_sqlalchemy_errors_and_leave_nothing_written(db: Database) -> None:
    async with db.write_session() as session:
        await session.execute(insert(notes).values(body="once"))
        await session.commit()
    async with db.write_session() as session:
        await session.execute(insert(notes).values(body="kept out"))
        with pytest.raises(IntegrityError):
            await session.execute(insert(notes).values(body="once"))
        await session.rollback()
    async with db.write_session() as session:
        with pytest.raises(OperationalError, match="no such table"):
            await session.execute(text("SELECT * FROM missing"))
    async with db.session() as session:
        bodies = (await session.execute(select(notes.c.body))).scalars().all()
    assert bodies == ["once"]


async def test_a_connection_given_back_is_rolled_back_only_when_still_in_a_transaction(
    db: Database, trips: Counter[str]
) -> None:
    async with db.write_session() as session:  # the writer pool's connection made (pragmas and all)
        await session.execute(insert(notes).values(body="kept"))
        await session.commit()
    trips.clear()
    async with db.write_session() as session:
        await session.execute(insert(notes).values(body="also kept"))
        await session.commit()
    # BEGIN IMMEDIATE, the INSERT, COMMIT: the pool adds no ROLLBACK after a commit.
    assert trips == Counter({"_run_statement": 2, "commit": 1})
    trips.clear()
    async with db.write_session() as session:
        await session.execute(insert(notes).values(body="dropped"))
        # Closed without a commit: the connection goes back still in its transaction.
    assert trips["rollback"] == 1
    # ... and went back without it: the write lock is free and the row is gone.
    async with db.write_session() as session:
        await session.execute(insert(notes).values(body="next"))
        await session.commit()
    async with db.session() as session:
        bodies = (await session.execute(select(notes.c.body).order_by(notes.c.id))).scalars().all()
    assert bodies == ["kept", "also kept", "next"]


async def test_inserts_held_back_go_with_the_commit_in_one_trip(db: Database, trips: Counter[str]) -> None:
    """``sent_with_commit``: plain inserts wait and go with the next trip, in their order."""
    async with db.write_session() as session:
        connection = await session.connection()  # BEGIN IMMEDIATE
        trips.clear()

        def write(sync_session: Any) -> list[str]:
            sync = sync_session.connection()
            with sent_with_commit(sync):
                sync.execute(insert(notes), [{"body": "held-1"}, {"body": "held-2"}])
                # A read goes at once, after what was held back: it sees the rows.
                seen = list(sync.execute(select(notes.c.body).order_by(notes.c.id)).scalars())
                sync.execute(insert(notes).values(body="held-3"))
                sync.execute(insert(notes).values(body="held-4"))
                sync_session.commit()
            return seen

        seen = await session.run_sync(write)
        assert not connection.in_transaction()
    assert seen == ["held-1", "held-2"]
    # The first insert with the SELECT, then the two last inserts with the COMMIT.
    assert trips == Counter({"_run_after": 1, "_run_statements_and_commit": 1})
    async with db.session() as session:
        rows = (await session.execute(select(notes.c.body).order_by(notes.c.id))).scalars().all()
    assert rows == ["held-1", "held-2", "held-3", "held-4"]


async def test_a_held_back_insert_that_fails_fails_the_commit_and_nothing_is_written(db: Database) -> None:
    async with db.write_session() as session:
        await session.execute(insert(notes).values(body="taken"))
        await session.commit()

    async with db.write_session() as session:

        def write(sync_session: Any) -> None:
            sync = sync_session.connection()
            with sent_with_commit(sync):
                sync.execute(insert(notes).values(body="new"))
                sync.execute(insert(notes).values(body="taken"))  # unique: fails, but only at COMMIT
                sync_session.commit()

        with pytest.raises(IntegrityError):
            await session.run_sync(write)
        await session.rollback()

    async with db.write_session() as session:
        rows = (await session.execute(select(notes.c.body))).scalars().all()
        assert rows == ["taken"]  # "new" went with the failed commit
        # The connection is usable, and holds nothing back any more.
        await session.execute(insert(notes).values(body="after"))
        await session.commit()
    async with db.session() as session:
        assert (await session.execute(select(notes.c.body).order_by(notes.c.id))).scalars().all() == [
            "taken",
            "after",
        ]


async def test_leaving_the_block_with_inserts_held_back_is_an_error(db: Database) -> None:
    async with db.write_session() as session:

        def forgot_to_commit(sync_session: Any) -> None:
            sync = sync_session.connection()
            with sent_with_commit(sync):
                sync.execute(insert(notes).values(body="never sent"))

        with pytest.raises(RuntimeError, match="never sent"):
            await session.run_sync(forgot_to_commit)
        await session.rollback()
    async with db.session() as session:
        assert (await session.execute(select(notes.c.body))).scalars().all() == []
