"""Database engines and the unit of work.

SQLite (the embedded default) and PostgreSQL run the same code. For SQLite we
turn on WAL, a busy timeout and foreign keys, and open write transactions with
``BEGIN IMMEDIATE``: a deferred transaction that later writes can fail at once
with "database is locked" instead of waiting its turn.

Waiting for the write lock held by another process (the api and the worker of a
service share one file) is ours, not SQLite's: its busy handler sleeps 1, 2, 5,
10 ... up to 100 ms between tries, so under steady writes from the other process
a writer here keeps missing the short gaps between that process's transactions
and its whole queue of writers waits with it. Write transactions poll every
0.5-4 ms instead, yielding to the event loop between tries (see ADR-0006).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import (
    JSON,
    ClauseElement,
    ColumnElement,
    DateTime,
    Insert,
    String,
    Table,
    TextClause,
    any_,
    bindparam,
    event,
    func,
    insert,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, InvalidatePoolError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.pool import PoolResetState
from sqlalchemy.sql.expression import TableClause, TableValuedAlias
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlalchemy.util import await_only
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.keyfiles import owner_only_file
from casebridge_shared.sqlite_dbapi import OneTripDbapi

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# A PostgreSQL connection given back to the pool less than this long ago is
# handed out again without a liveness check (HikariCP's aliveBypassWindowMs idea).
PING_AFTER_IDLE_SECONDS = 1.0
# Between tries for SQLite's write lock: the first wait, and the longest.
SQLITE_WRITE_POLL_SECONDS = (0.0005, 0.004)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both databases (SQLite stores naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StrEnumType(TypeDecorator[E]):
    """A status-like column read and written as its ``StrEnum``, stored as the member's value.

    The column stays a plain ``VARCHAR(length)`` on both databases (no CHECK constraint, no
    native enum type), so the schema the migrations built does not change and a row written
    by any earlier release, or by a Core ``insert()`` of plain strings, reads back as a member.
    A value that is not a member is refused when bound rather than stored.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length=length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        # str(...) and not the member itself: drivers must see exactly the stored string.
        return str(self.enum(value).value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


# SQLSTATEs of a server that is away, going away or full, whatever class the driver
# or SQLAlchemy gave the error: class 08 (connection exception) is matched as a class.
_UNREACHABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: pg_terminate_backend, a fast shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: "the database system is not accepting connections"
        "53300",  # too_many_connections
    }
)
# object_not_in_prerequisite_state: counts only with this message, "database X is not
# currently accepting connections" (ALTER DATABASE ... ALLOW_CONNECTIONS false).
_NOT_ACCEPTING = "55000"
_ASYNCPG_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# asyncpg's "cannot switch to state N; another operation (M) is in progress": a connection
# whose protocol was left mid-operation when the server dropped it. Seen after
# pg_terminate_backend under load; every later statement on it fails the same way.
_BROKEN_PROTOCOL = "another operation"
_CLOSED_MESSAGES = ("connection is closed", "connection was closed", "underlying connection is closed")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what lies under it: SQLAlchemy's ``orig``, ``__cause__``, and the
    ``__context__`` of a database or network error (a bug raised while handling one is a bug).

    SQLAlchemy wraps asyncpg's errors in DBAPI classes whose names say nothing
    (``DBAPIError`` around the dialect's ``Error`` around ``AdminShutdownError``); an
    error raised in a task group comes as an exception group.
    """
    found: list[BaseException] = []
    seen: set[int] = set()
    todo = [exc]
    while todo and len(found) < 32:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)
        if current.__cause__ is not None:
            todo.append(current.__cause__)
        if current.__context__ is not None and _is_database_kind(current):
            todo.append(current.__context__)
    return found


def _is_database_kind(exc: BaseException) -> bool:
    module = type(exc).__module__
    return isinstance(exc, OSError) or module.startswith(("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite"))


def _sqlstate(exc: BaseException) -> str | None:
    for name in ("sqlstate", "pgcode"):
        value = getattr(exc, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def _is_connection_error(exc: BaseException) -> bool:
    """One link of the chain says the connection is gone or cannot be made."""
    if isinstance(exc, _ASYNCPG_CONNECTION_ERRORS):
        return True
    if isinstance(exc, asyncpg.InternalClientError) and _BROKEN_PROTOCOL in str(exc):
        return True
    if isinstance(exc, asyncpg.InterfaceError):  # asyncpg's own: only a closed connection
        return any(m in str(exc) for m in _CLOSED_MESSAGES)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, PoolTimeoutError):  # every connection of the pool busy or hanging
        return True
    state = _sqlstate(exc)
    if state is None:
        return False
    if state.startswith("08") or state in _UNREACHABLE_SQLSTATES:
        return True
    return state == _NOT_ACCEPTING and "accepting connections" in str(exc)


def _is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError | socket.gaierror)


def is_database_unreachable(exc: BaseException) -> bool:
    """The database cannot be reached, refuses or dropped the connection: an api's 503 "try again".

    Refused, reset or timed-out sockets, names not resolved; on PostgreSQL the
    server's own word (SQLSTATE class 08, 57P01-57P03 terminated or starting up or
    shutting down, 53300 too many clients, 55000 "not currently accepting
    connections") and asyncpg's connection errors, found anywhere in the chain of
    wrapped errors; and SQLAlchemy's ``OperationalError``/``InterfaceError`` (SQLite:
    "database is locked"). A bare ``OSError`` that is not a network error (a full disk while
    an upload is stored) is the server's fault and stays a 500, as does a constraint
    violation or a bug.
    """
    if isinstance(exc, OSError) and not _is_network_error(exc):
        return False
    for cause in _causes(exc):
        if _is_connection_error(cause) or _is_network_error(cause):
            return True
        # SQLAlchemy's own word for a database that is away or busy (SQLite: "database is locked").
        if isinstance(cause, OperationalError | InterfaceError):
            return True
    return False


def is_transient_database_error(exc: BaseException) -> bool:
    """Worth trying again, not the data's fault: :func:`is_database_unreachable`, and more.

    A consumer or worker loop retries on this, so any ``OSError`` counts (a full disk
    or a file it cannot write yet passes like an outage, and skipping the event would
    lose it).
    """
    return is_database_unreachable(exc) or any(isinstance(cause, OSError) for cause in _causes(exc))


def create_engine(
    database_url: str, *, echo: bool = False, sqlite_writer: bool = False, **kwargs: Any
) -> AsyncEngine:
    """An engine; ``sqlite_writer``: every transaction takes SQLite's write lock up front, polling for it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            owner_only_file(Path(url.database))  # 0600: customer data; its WAL files follow its mode
        # Connecting (and switching to WAL) waits out other processes like any reader;
        # a write connection's own busy timeout is set to 0 right after (see _begin_immediate).
        busy_timeout_ms = 0 if sqlite_writer else SQLITE_BUSY_TIMEOUT_MS
        one_trip = url.get_driver_name() == "aiosqlite" and "module" not in kwargs
        if one_trip:
            kwargs["module"] = OneTripDbapi()
            # The pool's own reset is a ROLLBACK on every connection given back, a
            # trip to the database thread even right after a COMMIT;
            # _roll_back_if_in_transaction rolls back only a connection still in one.
            kwargs.setdefault("pool_reset_on_return", None)
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms, writer=sqlite_writer)
        if one_trip and kwargs["pool_reset_on_return"] is None:
            event.listen(engine.sync_engine.pool, "reset", _roll_back_if_in_transaction)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # Most recently used first: a busy process keeps reusing a few warm connections
    # (which need no check, below) and the rest stay idle until they are needed.
    kwargs.setdefault("pool_use_lifo", True)
    ping_after_idle = kwargs.pop("ping_after_idle_seconds", PING_AFTER_IDLE_SECONDS)
    engine = create_async_engine(url, echo=echo, **kwargs)
    event.listen(engine.sync_engine, "handle_error", _connection_errors_are_disconnects)
    if not kwargs.get("pool_pre_ping"):
        _check_idle_connections(engine, ping_after_idle)
    return engine


def _connection_errors_are_disconnects(context: Any) -> None:
    """A statement failed on a connection that is gone or broken: SQLAlchemy drops it from
    the pool (``is_disconnect``) instead of handing it out again.

    SQLAlchemy's asyncpg dialect knows a closed connection, but not one left
    mid-operation by a terminated backend (``InternalClientError``, above), which
    then failed every transaction it was given to.
    """
    if context.is_disconnect or context.original_exception is None:
        return
    if any(_is_connection_error(cause) for cause in _causes(context.original_exception)):
        context.is_disconnect = True


_GIVEN_BACK_AT = "casebridge.given_back_at"


def _check_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Check a connection is alive before handing it out, unless it was in use a moment ago.

    SQLAlchemy's ``pool_pre_ping`` checks on every checkout; with asyncpg that
    is BEGIN, an empty query and ROLLBACK, three round trips before each
    transaction (the order-intake api sent a pair per order). What the
    check is for, a connection the server dropped (a restart, a failover, an idle
    timeout), happens to idle connections; one given back within ``idle_seconds``
    was working then. A dead one is replaced (and the pool's older connections
    with it) before the caller sees it; a connection dropped inside the window
    fails its first statement like any mid-transaction disconnect, which every
    caller already handles (consumers retry, the api answers 503).
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _given_back(_dbapi_connection: Any, record: Any) -> None:
        record.info[_GIVEN_BACK_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _check_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        given_back_at = record.info.get(_GIVEN_BACK_AT)
        if given_back_at is None or time.monotonic() - given_back_at < idle_seconds:
            return  # just connected, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # As pool_pre_ping does: this one and every older connection are replaced.
                raise InvalidatePoolError() from error
            raise


def _roll_back_if_in_transaction(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """The pool's reset for SQLite: a connection back in the pool holds no transaction.

    ``in_transaction`` is sqlite3's own flag (we issue BEGIN ourselves), read
    without a trip to the database thread: no statement of this connection is
    running while it is given back.
    """
    if state.terminate_only or not state.asyncio_safe:
        return
    if getattr(dbapi_connection, "in_transaction", True):
        dbapi_connection.rollback()


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int, writer: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    if not writer:

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN DEFERRED")

        return

    # SQLite has one writer at a time. The writers of this process queue on an
    # asyncio lock, in arrival order, for as long as they hold a connection in a
    # transaction: taken at BEGIN, given back when the connection returns to the
    # pool after COMMIT or ROLLBACK (a session does that at commit), not when the
    # session closes: a request's answer is written after its commit.
    locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    @event.listens_for(sync_engine, "begin")
    def _on_write_begin(conn: Any) -> None:
        if _HELD not in conn.info:  # a connection kept across transactions keeps its turn
            loop = asyncio.get_running_loop()
            lock = locks.get(loop)
            if lock is None:
                lock = locks[loop] = asyncio.Lock()
            await_only(lock.acquire())
            conn.info[_HELD] = lock
        try:
            _begin_immediate(conn)
        except BaseException:
            _give_back(conn.info)
            raise

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        _give_back(record.info)


_HELD = "casebridge.write_lock"


def _give_back(info: dict[Any, Any]) -> None:
    lock: asyncio.Lock | None = info.pop(_HELD, None)
    if lock is not None:
        lock.release()


def _begin_immediate(conn: Any) -> None:
    """``BEGIN IMMEDIATE``, trying again every few milliseconds while another process writes.

    Runs inside SQLAlchemy's greenlet (the ``begin`` event of an async engine), so it
    can wait on the event loop with ``await_only``.
    """
    first, longest = SQLITE_WRITE_POLL_SECONDS
    wait = first
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                raise
        await_only(asyncio.sleep(wait))
        wait = min(wait * 2, longest)


_TRANSACTION_KEYS = "casebridge.transaction_keys"


_ON_COMMIT = "casebridge.on_commit"


def _end_of_transaction(session: Any, *_args: Any) -> None:
    for key in session.info.pop(_TRANSACTION_KEYS, ()):
        session.info.pop(key, None)


def _committed(session: Any) -> None:
    callbacks: list[Callable[[], None]] = session.info.get(_ON_COMMIT, [])
    _end_of_transaction(session)
    for callback in callbacks:
        callback()


def on_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once this transaction has committed (not if it rolls back); once however
    often it is registered. For telling others in the process that there is new work, as Django's
    ``transaction.on_commit``: the callback must be quick and must not raise.
    """
    callbacks: list[Callable[[], None]] = transaction_scoped(session, _ON_COMMIT, list)
    if callback not in callbacks:
        callbacks.append(callback)


def transaction_scoped(session: AsyncSession, key: str, make: Callable[[], T]) -> T:
    """``session.info[key]``, made by ``make()`` on first use and dropped when the transaction ends.

    For what one transaction may remember and the next must not: look-ups of a
    consumer run, the journal's locked head and its rows not written yet.
    """
    if key in session.info:
        value: T = session.info[key]
        return value
    sync = session.sync_session
    if not sync.in_transaction():
        # Begun now, not at the first statement: a rollback before any statement
        # ends a transaction too, and drops what it remembered.
        sync.begin()
    if not event.contains(sync, "after_commit", _committed):
        event.listen(sync, "after_commit", _committed)
    for name in ("after_rollback", "after_soft_rollback"):
        if not event.contains(sync, name, _end_of_transaction):
            event.listen(sync, name, _end_of_transaction)
    session.info.setdefault(_TRANSACTION_KEYS, set()).add(key)
    made = session.info[key] = make()
    return made


_QUEUED_INSERTS = "casebridge.queued_inserts"
# Execution option: this statement does not need the rows queued by ``queue_insert``
# (the caller knows none of them can match), so they may stay queued.
WITHOUT_QUEUED_ROWS = "casebridge_without_queued_rows"


def queue_insert(session: AsyncSession, table: Table, *rows: dict[str, Any]) -> None:
    """Rows this transaction creates, written when it commits: one insert per table, not one per row.

    Or earlier, before any statement of the same transaction that names one of
    their tables (in a join or a subquery too; ``text()`` always counts), so the
    transaction still sees its own rows: a later update or look-up of them works.
    A statement run with the execution option ``WITHOUT_QUEUED_ROWS`` leaves them
    queued. Rows of several tables go in the order their tables were first
    queued; every row of one table needs the same keys. Rolled back, nothing is
    written. For the many small rows a consumer run or a group of api requests
    adds (notifications, records, timers): each ORM object costs about as much
    CPU as the statement that writes it, and a flush in between costs a trip.
    """
    if not rows:
        return
    queued: dict[Table, list[dict[str, Any]]] = transaction_scoped(session, _QUEUED_INSERTS, dict)
    sync = session.sync_session
    if not event.contains(sync, "before_commit", _write_queued):
        event.listen(sync, "before_commit", _write_queued)
        event.listen(sync, "do_orm_execute", _write_queued_before)
    queued.setdefault(table, []).extend(rows)


def queued_rows(session: AsyncSession, table: Table) -> list[dict[str, Any]]:
    """The rows of ``table`` queued by ``queue_insert`` and not written yet."""
    queued: dict[Table, list[dict[str, Any]]] = session.info.get(_QUEUED_INSERTS) or {}
    return list(queued.get(table, []))


def _write_queued(session: Any) -> None:
    queued: dict[Table, list[dict[str, Any]]] | None = session.info.get(_QUEUED_INSERTS)
    if not queued:
        return
    tables = list(queued.items())
    queued.clear()
    connection = session.connection()
    for table, rows in tables:
        connection.execute(insert_into(table), rows)


def _write_queued_before(execute_state: ORMExecuteState) -> None:
    queued: dict[Table, list[dict[str, Any]]] | None = execute_state.session.info.get(_QUEUED_INSERTS)
    if not queued or execute_state.execution_options.get(WITHOUT_QUEUED_ROWS):
        return
    named = tables_named(execute_state.statement)
    if named is not None and named.isdisjoint(queued):
        return
    _write_queued(execute_state.session)


# Statements built once and run often (a module's prebuilt look-ups) are walked once.
_NAMED: weakref.WeakKeyDictionary[Any, frozenset[TableClause] | None] = weakref.WeakKeyDictionary()


def tables_named(statement: Any) -> frozenset[TableClause] | None:
    """Every table ``statement`` names, in joins and subqueries too; None when that is unknown (text())."""
    if not isinstance(statement, ClauseElement) or isinstance(statement, TextClause):
        return None
    try:
        return _NAMED[statement]
    except KeyError:
        named = _NAMED[statement] = frozenset(
            find_tables(statement, include_aliases=True, include_joins=True, include_crud=True)
        )
        return named


@functools.cache
def insert_into(table: Table) -> Insert:
    """One insert statement per table, kept: it keeps its cache key too."""
    return insert(table)


def table_of(model: type[Any]) -> Table:
    """The Core table behind a SQLModel class, for statements that need no ORM objects."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


class Database:
    """Owns the engine; hands out sessions for reads and units of work for writes."""

    def __init__(self, database_url: str, **engine_kwargs: Any) -> None:
        self.url = database_url
        self.engine = create_engine(database_url, **engine_kwargs)
        # SQLite: a pool of its own whose transactions take the write lock up front.
        self._writer = (
            create_engine(database_url, sqlite_writer=True, **engine_kwargs)
            if self.engine.dialect.name == "sqlite"
            else self.engine
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            yield session

    @property
    def writer_engine(self) -> AsyncEngine:
        """The engine of ``write_session`` (on SQLite its own, which takes the write lock up front)."""
        return self._writer

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """A session for writing; on SQLite its transactions take the write lock up front."""
        async with AsyncSession(self._writer, expire_on_commit=False) as session:
            yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._writer is not self.engine:
            await self._writer.dispose()

    def asyncpg_dsn(self) -> str:
        """The PostgreSQL database as a DSN for a connection of asyncpg's own (LISTEN, advisory locks)."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def listen(self, channel: str, wake: Callable[[], None]) -> asyncpg.Connection | None:
        """On PostgreSQL, a connection that calls ``wake()`` at every NOTIFY on ``channel``.

        None on SQLite, or when the connection cannot be made (the caller polls
        then, and tries again later). The caller closes it; a closed one wakes
        nobody, so callers check ``is_closed()`` before relying on it.
        """
        if self.dialect != "postgresql":
            return None
        try:
            connection: asyncpg.Connection = await asyncpg.connect(self.asyncpg_dsn(), timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        await connection.add_listener(channel, lambda *_args: wake())
        return connection


_NOTIFY_AT_COMMIT = "casebridge.notify_at_commit"


def notify_at_commit(session: AsyncSession, channel: str) -> None:
    """On PostgreSQL, ``NOTIFY channel`` with this transaction's commit (listeners wake once its rows
    are visible; nothing is sent if it rolls back). Nothing on SQLite, whose readers poll.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    channels: set[str] = transaction_scoped(session, _NOTIFY_AT_COMMIT, set)
    channels.add(channel)
    sync = session.sync_session
    if not event.contains(sync, "before_commit", _send_notifications):
        event.listen(sync, "before_commit", _send_notifications)


def _send_notifications(session: Any) -> None:
    channels: set[str] | None = session.info.get(_NOTIFY_AT_COMMIT)
    if channels:
        connection = session.connection()
        for channel in sorted(channels):
            connection.execute(_PG_NOTIFY, {"channel": channel})
        channels.clear()


_PG_NOTIFY = text("SELECT pg_notify(:channel, '')")


FileSignature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class DatabaseFiles:
    """A SQLite database file and its write-ahead log, as ``stat`` sees them.

    A commit, by any process, writes the write-ahead log: comparing the two files'
    size and time costs a few microseconds where a query costs a millisecond, so a
    reader waiting for other processes' commits looks here and queries on a change.
    """

    paths: tuple[str, ...]

    @classmethod
    def of(cls, db: Database) -> DatabaseFiles | None:
        if db.dialect != "sqlite":
            return None
        database = make_url(db.url).database
        if not database or database == ":memory:":
            return None
        return cls((database, database + "-wal"))

    def signature(self) -> FileSignature:
        found = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                found.append((0, 0, 0))
            else:
                found.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(found)


def each_of(name: str, item_type: TypeEngine[Any], dialect: str) -> TableValuedAlias:
    """The list bound as ``name`` as a table of one column, ``value``: to ask something of each item.

    ``unnest`` of one array parameter on PostgreSQL, ``json_each`` of its JSON on
    SQLite. For per-item questions an index answers in one seek (the newest row of
    each of these people) where ``GROUP BY`` over ``one_of`` reads all their rows.
    """
    if dialect == "postgresql":
        return (
            func.unnest(bindparam(name, type_=postgresql.ARRAY(item_type)))
            .table_valued("value")
            .render_derived(with_types=False)
        )
    return func.json_each(bindparam(name, type_=JSON())).table_valued("value")


def one_of(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """``column`` equal to one of the list bound as ``name`` (a list of any length).

    On PostgreSQL ``= ANY(:name)``, one array parameter, rather than ``IN`` with a
    parameter per item: asyncpg prepares each statement, and after a few runs
    PostgreSQL may keep a generic plan for it. For ``IN`` with a few hundred
    parameters that generic plan became a sequential scan once the table had some
    thousands of rows (never analysed yet: a fresh database, or autovacuum off), and
    stayed one as the table grew (bench/bench_case_runs.py; see ADR-0017). ``ANY`` of an array parameter is
    estimated at a few items, so its generic plan keeps the index. SQLite has no
    arrays: ``IN``, expanded per call.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))
