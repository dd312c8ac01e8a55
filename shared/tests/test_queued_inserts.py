"""Rows queued for the commit: one insert per table, written early when a statement needs them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text, update

from casebridge_shared import testing
from casebridge_shared.db import WITHOUT_QUEUED_ROWS, Database, queue_insert, queued_rows

metadata = MetaData()
NOTES = Table(
    "queued_notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("text", String(100), nullable=False),
)
TAGS = Table(
    "queued_tags",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("note_id", Integer, nullable=False),
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.scratch_database(tmp_path, "cbt_queued") as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database


def inserts(sent: list[str]) -> list[str]:
    return [statement for statement in sent if statement.upper().startswith("INSERT")]


async def stored(db: Database, table: Table) -> list[int]:
    async with db.session() as session:
        return sorted((await session.execute(select(table.c.id))).scalars())


async def test_queued_rows_are_written_at_commit_in_one_insert_per_table(db: Database) -> None:
    with testing.statements_sent(db) as sent:
        async with db.write_session() as session:
            for number in range(1, 51):
                queue_insert(session, NOTES, {"id": number, "text": f"note {number}"})
                queue_insert(session, TAGS, {"id": number, "note_id": number})
            assert inserts(sent) == []  # nothing written before the commit
            await session.commit()
    assert len(inserts(sent)) == 2
    assert await stored(db, NOTES) == list(range(1, 51))
    assert await stored(db, TAGS) == list(range(1, 51))


async def test_a_statement_naming_the_table_sees_the_queued_rows(db: Database) -> None:
    async with db.write_session() as session:
        queue_insert(session, NOTES, {"id": 1, "text": "first"}, {"id": 2, "text": "second"})
        # A look-up of another table leaves them queued ...
        assert (await session.execute(select(func.count()).select_from(TAGS))).scalar_one() == 0
        assert queued_rows(session, NOTES) == [{"id": 1, "text": "first"}, {"id": 2, "text": "second"}]
        # ... this one (the notes table in a subquery) sees them, and so does an update. Every
        # queued row goes out then, the other tables' too: a row may refer to one queued earlier.
        queue_insert(session, TAGS, {"id": 1, "note_id": 1})
        counted = select(func.count()).select_from(select(NOTES.c.id).subquery())
        assert (await session.execute(counted)).scalar_one() == 2
        assert queued_rows(session, NOTES) == [] and queued_rows(session, TAGS) == []
        await session.execute(update(NOTES).where(NOTES.c.id == 2).values(text="changed"))
        await session.commit()
    async with db.session() as session:
        texts = {row.id: row.text for row in await session.execute(select(NOTES.c.id, NOTES.c.text))}
    assert texts == {1: "first", 2: "changed"}


async def test_text_statements_always_see_the_queued_rows(db: Database) -> None:
    async with db.write_session() as session:
        queue_insert(session, NOTES, {"id": 7, "text": "seven"})
        assert (await session.execute(text("SELECT count(*) FROM queued_notes"))).scalar_one() == 1
        await session.rollback()


async def test_a_statement_that_says_it_needs_none_leaves_them_queued(db: Database) -> None:
    async with db.write_session() as session:
        queue_insert(session, NOTES, {"id": 1, "text": "queued"})
        count = await session.execute(
            select(func.count()).select_from(NOTES), execution_options={WITHOUT_QUEUED_ROWS: True}
        )
        assert count.scalar_one() == 0
        assert len(queued_rows(session, NOTES)) == 1
        await session.commit()
    assert await stored(db, NOTES) == [1]


async def test_a_rolled_back_transaction_writes_nothing_and_the_next_starts_empty(db: Database) -> None:
    async with db.write_session() as session:
        queue_insert(session, NOTES, {"id": 1, "text": "gone"})
        await session.rollback()
        assert queued_rows(session, NOTES) == []
        queue_insert(session, NOTES, {"id": 2, "text": "kept"})
        await session.commit()
    assert await stored(db, NOTES) == [2]


async def test_a_refused_row_fails_the_commit_and_nothing_of_the_transaction_stays(db: Database) -> None:
    async with db.write_session() as session:
        queue_insert(session, NOTES, {"id": 1, "text": "one"})
        await session.commit()
    async with db.write_session() as session:
        queue_insert(session, TAGS, {"id": 1, "note_id": 1})
        queue_insert(session, NOTES, {"id": 2, "text": "two"}, {"id": 1, "text": "the same id again"})
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            await session.commit()
        await session.rollback()
    assert await stored(db, NOTES) == [1]
    assert await stored(db, TAGS) == []
