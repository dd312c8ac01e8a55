"""SQLite write transactions across processes, the in-process turn, transaction-scoped state."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

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


async def _backend_pid(database: Database) -> int:
    async with database.session() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_postgresql_connection_dropped_while_idle_is_replaced_before_anyone_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked before use when idle; a connection in use a moment ago is handed out without a check."""
    from casebridge_shared import testing
    from casebridge_shared.db import is_transient_database_error

    async with testing.scratch_database(tmp_path, "cbt_idle_check") as scratch:
        if scratch.dialect != "postgresql":
            pytest.skip("a PostgreSQL connection pool (run with CASEBRIDGE_TEST_POSTGRES_URL)")
        url = scratch.engine.url.render_as_string(hide_password=False)

        # Every connection given back counts as idle: checked, found dead, replaced.
        checked = Database(url, ping_after_idle_seconds=0.0)
        pings = _counting_pings(monkeypatch, checked)
        try:
            first = await _backend_pid(checked)
            await _terminate(scratch, first)
            second = await _backend_pid(checked)  # no error reaches the caller
            assert second != first
            assert len(pings) == 1
        finally:
            await checked.dispose()

        # In use a moment ago: no check, so a connection dropped in that window fails
        # its first statement as a transient error (callers retry), and the next one works.
        trusted = Database(url, ping_after_idle_seconds=3600.0)
        pings = _counting_pings(monkeypatch, trusted)
        try:
            first = await _backend_pid(trusted)
            assert await _backend_pid(trusted) == first
            await _terminate(scratch, first)
            with pytest.raises(DBAPIError) as failed:
                await _backend_pid(trusted)
            assert is_transient_database_error(failed.value)
            assert await _backend_pid(trusted) != first
            assert pings == []
        finally:
            await trusted.dispose()


def _counting_pings(monkeypatch: pytest.MonkeyPatch, database: Database) -> list[object]:
    dialect = database.engine.sync_engine.dialect
    pings: list[object] = []
    original = dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return original(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


async def _terminate(database: Database, pid: int) -> None:
    async with database.session() as session:
        await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    # pg_terminate_backend only signals; wait until the backend is gone (a session
    # each time: pg_stat_activity is read once per transaction).
    gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with database.session() as session:
            if not (await session.execute(gone, {"pid": pid})).scalar_one():
                return
        assert asyncio.get_running_loop().time() < deadline, "the terminated backend did not exit"
        await asyncio.sleep(0.01)


async def test_each_of_gives_the_bound_list_as_rows_on_either_database(tmp_path: Path) -> None:
    """``each_of``: one row per item, in a statement that asks something of each (here: is it a key)."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

    from casebridge_shared import testing
    from casebridge_shared.db import each_of

    metadata = MetaData()
    keys = Table("keys", metadata, Column("id", Integer, primary_key=True), Column("key", String(36)))
    async with testing.scratch_database(tmp_path, "cbt_each_of") as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(keys), [{"id": i, "key": f"key-{i % 3}"} for i in range(9)])
        items = each_of("wanted", keys.c.key.type, database.dialect)
        newest = (
            select(keys.c.id).where(keys.c.key == items.c.value).order_by(keys.c.id.desc()).limit(1)
        ).scalar_subquery()
        statement = select(items.c.value, newest)
        for wanted, expected in (
            ([], {}),
            (["key-1"], {"key-1": 7}),
            (["key-0", "nope", "key-2"], {"key-0": 6, "nope": None, "key-2": 8}),
        ):
            async with database.session() as session:
                found = {v: i for v, i in (await session.execute(statement, {"wanted": wanted})).all()}
            assert found == expected


async def test_a_str_enum_column_stores_the_plain_value_and_reads_back_the_member(tmp_path: Path) -> None:
    """``StrEnumType``: VARCHAR of the given length, the member's value stored, the member read back."""
    from enum import StrEnum

    from sqlalchemy import Column, Integer, MetaData, Table, insert, select
    from sqlalchemy.exc import StatementError
    from sqlalchemy.schema import CreateTable

    from casebridge_shared import testing
    from casebridge_shared.db import StrEnumType

    class Colour(StrEnum):
        RED = "red"
        GREEN = "green"

    metadata = MetaData()
    things = Table(
        "things",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("colour", StrEnumType(Colour, 16), nullable=False),
    )
    async with testing.scratch_database(tmp_path, "cbt_str_enum") as database:
        ddl = str(CreateTable(things).compile(dialect=database.engine.dialect))
        assert "colour VARCHAR(16) NOT NULL" in ddl  # the schema a plain str column had
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            # A Core insert of dicts, with the member or with its plain string.
            await conn.execute(
                insert(things), [{"id": 1, "colour": Colour.RED}, {"id": 2, "colour": "green"}]
            )
            stored = (await conn.execute(text("SELECT colour FROM things ORDER BY id"))).scalars().all()
            assert stored == ["red", "green"] and all(type(v) is str for v in stored)
            read = (await conn.execute(select(things.c.colour).order_by(things.c.id))).scalars().all()
            assert read == [Colour.RED, Colour.GREEN] and all(type(v) is Colour for v in read)
            found = (await conn.execute(select(things.c.id).where(things.c.colour == Colour.GREEN))).scalars()
            assert list(found) == [2]
            with pytest.raises(StatementError) as refused:
                await conn.execute(insert(things), {"id": 3, "colour": "purple"})
            assert isinstance(refused.value.orig, ValueError)
