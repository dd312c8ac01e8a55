"""aiosqlite for SQLAlchemy with one trip to the database thread per statement.

aiosqlite runs each sqlite3 call on a thread of its own and hands the result
back to the event loop: a wake-up of that thread, of the loop, and a turn of
the GIL each way. SQLAlchemy's stock adapter makes three or four such trips
per statement (open a cursor, execute, fetch the rows, close the cursor): 22
for placing an order, which cost more CPU than the SQL itself. This adapter
does the whole statement in one trip (a plain sqlite3 cursor, opened, run,
read and closed on the database thread) and keeps the rows, the description,
the row count and the last row id on the event loop's side.

It reaches into the same two aiosqlite internals SQLAlchemy's own adapter
does (the connection's sqlite3 object and its job queue, through ``_execute``);
``tests`` of the shared library and every service run on it.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import Connection
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_only

_Outcome = tuple[Any, list[Any], int, int | None]
_Statement = tuple[str, Any, bool]


def _run_statement(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """On the database thread: the statement from start to end."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        # Read after the rows: for INSERT ... RETURNING the count is final only then.
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _run_after(
    connection: sqlite3.Connection, held_back: list[_Statement], operation: str, parameters: Any, many: bool
) -> _Outcome:
    """On the database thread: the held-back statements, then this one, whose outcome is returned."""
    for held in held_back:
        _run_statement(connection, *held)
    return _run_statement(connection, operation, parameters, many)


def _run_statements_and_commit(connection: sqlite3.Connection, statements: list[_Statement]) -> None:
    """On the database thread: the held-back statements, then COMMIT (nothing committed if one fails)."""
    for operation, parameters, many in statements:
        _run_statement(connection, operation, parameters, many)
    connection.commit()


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:  # no super(): it opens an aiosqlite cursor
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _run(self, operation: str, parameters: Any, many: bool) -> None:
        adapted: _OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        held_back = adapted._sent_with_commit
        if (
            held_back is not None
            and operation.lstrip()[:6].upper() == "INSERT"
            and "RETURNING" not in operation
        ):
            # Nothing is read from a plain INSERT: it goes with the next trip (see sent_with_commit).
            held_back.append((operation, parameters, many))
            self._description, self._rowcount, self._lastrowid = None, -1, None
            self._rows = collections.deque()
            return
        async with self._adapt_connection._execute_mutex:
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            if held_back:
                # Order kept: what was held back runs first, in this same trip.
                statements = list(held_back)
                held_back.clear()
                outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                    _run_after, connection._conn, statements, operation, parameters, many
                )
            else:
                outcome = await connection._execute(  # type: ignore[no-untyped-call]
                    _run_statement, connection._conn, operation, parameters, many
                )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(operation, seq_of_parameters, True)

    async def _async_soft_close(self) -> None:
        """Nothing to close: the sqlite3 cursor was closed on the database thread."""

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        """sqlite3 has one result set per statement."""

    def setinputsizes(self, *inputsizes: Any) -> None:
        """Not used by sqlite3."""


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_sent_with_commit",)
    _cursor_cls = _OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # Inserts held back to go with the COMMIT, while ``sent_with_commit`` is on.
        self._sent_with_commit: list[_Statement] | None = None

    def commit(self) -> None:
        held_back, self._sent_with_commit = self._sent_with_commit, None
        if not held_back:
            super().commit()
            return
        try:
            await_only(self._run_and_commit(held_back))
        except Exception as error:
            self._handle_exception(error)

    async def _run_and_commit(self, statements: list[_Statement]) -> None:
        async with self._execute_mutex:
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            await connection._execute(_run_statements_and_commit, connection._conn, statements)  # type: ignore[no-untyped-call]

    def rollback(self) -> None:
        self._sent_with_commit = None
        super().rollback()

    @property
    def in_transaction(self) -> bool:
        """sqlite3's flag, read here: asking the database thread would be a trip."""
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        return bool(connection._conn.in_transaction)


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The ``module`` for ``create_async_engine`` on a ``sqlite+aiosqlite`` URL."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> _OneTripConnection:
        connection = aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy's adapter: never keeps the process alive
        return _OneTripConnection(self, await_only(connection))


@contextlib.contextmanager
def sent_with_commit(connection: Connection) -> Iterator[None]:
    """Inside, plain INSERTs on ``connection`` are held back and sent with what comes next, one trip.

    For the end of a unit of work, whose last inserts nobody reads back: the
    write lock of a SQLite file is held from BEGIN IMMEDIATE to COMMIT, and
    with a trip to the database thread per statement it was held across as
    many turns of a busy event loop, where other requests' work ran first.
    Held-back inserts go with the next statement that is not one (a SELECT,
    an INSERT ... RETURNING, an UPDATE or DELETE, whose row count may be
    read), before it, or with the COMMIT: the order of statements is kept. A
    failing insert fails the statement it went with, or the COMMIT, which
    then commits nothing. Commit inside the block: leaving it with inserts
    still held back is an error. On other drivers nothing changes.
    """
    adapted = connection.connection.dbapi_connection
    if not isinstance(adapted, _OneTripConnection):
        yield
        return
    adapted._sent_with_commit = []
    try:
        yield
    except BaseException:
        adapted._sent_with_commit = None  # the transaction is being abandoned with them
        raise
    held_back, adapted._sent_with_commit = adapted._sent_with_commit, None
    if held_back:
        # Dropping them silently would lose writes a later COMMIT was meant to carry.
        raise RuntimeError("inserts held back by sent_with_commit were never sent: commit inside the block")
