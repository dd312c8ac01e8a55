"""SQLite write transactions across processes, the in-process turn, transaction-scoped state."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from casebridge_shared.db import Database, on_commit, transaction_scoped


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}")
    async with database.write_session() as session:
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
        await session.commit()
    yield database
    await database.dispose()


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(text("SELECT count(*) FROM notes"))).scalar_one())


async def test_a_writer_waits_for_another_connection_holding_the_write_lock_then_writes(
    db: Database, tmp_path: Path
) -> None:
    # Another process's transaction, as SQLite sees it: a connection of its own.
    other = sqlite3.connect(tmp_path / "test.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO notes (body) VALUES ('from the other process')")

    async def write() -> None:
        async with db.write_session() as session:
            await session.execute(text("INSERT INTO notes (body) VALUES ('ours')"))
            await session.commit()

    writing = asyncio.create_task(write())
    # Not "database is locked" at once (write connections have no busy timeout of
    # their own): it keeps trying while the other transaction holds the lock.
    done, _ = await asyncio.wait({writing}, timeout=0.2)
    assert not done
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(writing, timeout=30)
    assert await _count(db) == 2


async def test_the_turn_to_write_is_given_back_at_commit_not_when_the_session_closes(db: Database) -> None:
    async with db.write_session() as first:
        await first.execute(text("INSERT INTO notes (body) VALUES ('first')"))
        await first.commit()
        # ``first`` is still open (a request writing its answer after the commit);
        # another writer of this process must not wait for it to close.

        async def second() -> None:
            async with db.write_session() as session:
                await session.execute(text("INSERT INTO notes (body) VALUES ('second')"))
                await session.commit()

        await asyncio.wait_for(second(), timeout=30)
    assert await _count(db) == 2


async def test_transaction_scoped_state_lives_until_commit_or_rollback(db: Database) -> None:
    async with db.write_session() as session:
        await session.execute(text("INSERT INTO notes (body) VALUES ('x')"))
        first = transaction_scoped(session, "test.memo", dict)
        first["answer"] = 42
        assert transaction_scoped(session, "test.memo", dict) is first  # same transaction
        await session.commit()
        assert transaction_scoped(session, "test.memo", dict) == {}  # the next one starts afresh

        await session.execute(text("INSERT INTO notes (body) VALUES ('y')"))
        transaction_scoped(session, "test.memo", dict)["answer"] = 43
        await session.rollback()
        assert transaction_scoped(session, "test.memo", dict) == {}


async def test_on_commit_callbacks_run_once_after_the_commit_and_never_after_a_rollback(db: Database) -> None:
    called: list[str] = []

    def told() -> None:
        called.append("told")

    async with db.write_session() as session:
        on_commit(session, told)
        await session.rollback()  # before any statement: still a transaction that ended
        await session.execute(text("INSERT INTO notes (body) VALUES ('rolled back')"))
        on_commit(session, told)
        await session.rollback()
        assert called == []
        await session.execute(text("INSERT INTO notes (body) VALUES ('kept')"))
        on_commit(session, told)
        on_commit(session, told)  # the same callback twice: told once
        assert called == []
        await session.commit()
        assert called == ["told"] and await _count(db) == 1
        await session.execute(text("INSERT INTO notes (body) VALUES ('next')"))
        await session.commit()  # the next transaction registered nothing
    assert called == ["told"]


async def test_one_of_finds_the_listed_keys_with_one_parameter_on_postgresql(tmp_path: Path) -> None:
    """``one_of``: the right rows for lists of any length; on PostgreSQL one array parameter."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

    from casebridge_shared import testing
    from casebridge_shared.db import one_of

    metadata = MetaData()
    keys = Table(
        "keys", metadata, Column("id", Integer, primary_key=True), Column("key", String(36), unique=True)
    )
    async with testing.scratch_database(tmp_path, "cbt_one_of") as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(keys), [{"id": i, "key": f"key-{i}"} for i in range(1200)])
        statement = select(keys.c.id).where(one_of(keys.c.key, "wanted", database.dialect))
        sql = str(statement.compile(dialect=database.engine.dialect))
        if database.dialect == "postgresql":
            assert "= ANY (" in sql and "IN (" not in sql  # one parameter, whatever the list's length
        for wanted in ([], ["key-7"], [f"key-{i}" for i in range(0, 2000, 2)]):
            async with database.session() as session:
                found = set((await session.execute(statement, {"wanted": wanted})).scalars())
            assert found == {
                int(k.removeprefix("key-")) for k in wanted if int(k.removeprefix("key-")) < 1200
            }
