"""Errors nobody handled: a database outage is a 503 the client may retry, anything else a 500."""

from __future__ import annotations

import asyncio
import errno
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from casebridge_shared import testing
from casebridge_shared.db import Database, is_database_unreachable, is_transient_database_error
from casebridge_shared.problems import PROBLEM_CONTENT_TYPE, install_problem_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/refused")
    async def refused() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    @app.get("/dropped")
    async def dropped() -> None:
        raise DBAPIError(
            "SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True
        )

    @app.get("/refused-socket")
    async def refused_socket() -> None:
        # asyncpg's connect lets the socket's own error through, unwrapped.
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")

    @app.get("/connect-timeout")
    async def connect_timeout() -> None:
        raise TimeoutError()

    @app.get("/disk-full")
    async def disk_full() -> None:
        # e.g. storing an upload: the server's fault, not a database outage.
        raise OSError(errno.ENOSPC, "No space left on device", "/var/attachments/x")

    @app.get("/constraint")
    async def constraint() -> None:
        raise DBAPIError("INSERT", {}, Exception("duplicate key"))

    @app.get("/bug")
    async def bug() -> None:
        raise ValueError("a bug with a secret=hunter2 in it")

    return app


async def _get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_a_database_that_cannot_be_reached_is_a_503_with_retry_after() -> None:
    for path in ("/refused", "/dropped", "/refused-socket", "/connect-timeout"):
        response = await _get(path)
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.headers["retry-after"] == "1"
        body = response.json()
        assert body["status"] == 503 and body["instance"] == path
        assert "try again" in body["detail"]


async def test_other_errors_are_a_500_that_tells_nothing_of_the_cause() -> None:
    for path in ("/constraint", "/bug", "/disk-full"):
        response = await _get(path)
        assert response.status_code == 500
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert "retry-after" not in response.headers
        assert "hunter2" not in response.text and "duplicate" not in response.text
        assert "space" not in response.text and "database" not in response.text


# -- the real thing: a PostgreSQL server that refuses, terminates or is full --------------------


class _RefusingServer:
    """A socket that speaks just enough of PostgreSQL's protocol to refuse every login with
    ``sqlstate`` (or, with None, to never answer): what a server starting up, shutting down or
    full says, which a test cannot make the real server say on demand."""

    def __init__(self, sqlstate: str | None, message: str) -> None:
        self.sqlstate = sqlstate
        self.message = message
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres?ssl=disable"

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            await reader.readexactly(length - 4)  # the startup message
            if self.sqlstate is None:
                await reader.read()  # never answers; the client times out
                return
            fields = b"".join(
                code + value.encode() + b"\0"
                for code, value in (
                    (b"S", "FATAL"),
                    (b"V", "FATAL"),
                    (b"C", self.sqlstate),
                    (b"M", self.message),
                )
            )
            body = fields + b"\0"
            writer.write(b"E" + struct.pack("!I", len(body) + 4) + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _pinging_app(database: Database) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        await database.ping()
        return {"status": "ok"}

    return app


async def _ask(app: FastAPI, path: str = "/ping") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


def _assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.headers["retry-after"] == "1"
    assert response.json()["status"] == 503


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is not accepting connections"),
        ("57P03", "the database system is starting up"),
        ("53300", "sorry, too many clients already"),
        ("08006", "connection failure"),
        (None, "no answer: connect timeout"),
    ],
)
async def test_a_server_refusing_logins_is_a_503_through_asyncpg_and_sqlalchemy(
    sqlstate: str | None, message: str
) -> None:
    async with _RefusingServer(sqlstate, message) as url:
        database = Database(url, connect_args={"timeout": 0.5})
        try:
            with pytest.raises((DBAPIError, OSError)) as raised:
                await database.ping()
            # SQLAlchemy's wrapper names none of this: DBAPIError around asyncpg's error.
            assert is_database_unreachable(raised.value) and is_transient_database_error(raised.value)
            _assert_503(await _ask(_pinging_app(database)))
        finally:
            await database.dispose()


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.scratch_database(tmp_path, "cbt_unreachable") as scratch:
        if scratch.dialect != "postgresql":
            pytest.skip("a real PostgreSQL server (run with CASEBRIDGE_TEST_POSTGRES_URL)")
        async with scratch.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY)"))
        yield scratch


async def test_a_terminated_connection_is_a_503(postgres: Database) -> None:
    url = postgres.engine.url.render_as_string(hide_password=False)
    # Handed out without a liveness check, so the statement meets the dead connection.
    database = Database(url, ping_after_idle_seconds=3600.0)
    app = FastAPI()
    install_problem_handlers(app)
    pids: list[int] = []

    @app.get("/terminated")
    async def terminated() -> None:
        async with database.session() as session:
            pid = int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            pids.append(pid)
            await testing.terminate_connections(postgres.url, pid=pid)
            await session.execute(text("SELECT 1"))

    try:
        response = await _ask(app, "/terminated")
        _assert_503(response)
        assert pids
    finally:
        await database.dispose()


async def test_a_database_not_accepting_connections_is_a_503(postgres: Database) -> None:
    url = postgres.engine.url.render_as_string(hide_password=False)
    database = Database(url)
    try:
        async with testing.connections_refused(postgres.url):
            with pytest.raises(DBAPIError) as raised:
                await database.ping()
            assert "not currently accepting connections" in str(raised.value)
            assert is_database_unreachable(raised.value)
            _assert_503(await _ask(_pinging_app(database)))
        assert (await _ask(_pinging_app(database))).status_code == 200  # back once it is allowed again
    finally:
        await database.dispose()


async def test_too_many_connections_for_a_role_is_a_503(postgres: Database) -> None:
    role = f"cbt_limited_{uuid.uuid4().hex[:8]}"
    base = postgres.url
    await testing.pg_exec(base, f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        url = make_url(base).set(username=role, password=None).render_as_string(hide_password=False)
        database = Database(url)
        try:
            with pytest.raises(DBAPIError) as raised:
                await database.ping()
            assert "too many connections" in str(raised.value)
            assert is_database_unreachable(raised.value)
            _assert_503(await _ask(_pinging_app(database)))
        finally:
            await database.dispose()
    finally:
        await testing.pg_exec(base, f'DROP ROLE IF EXISTS "{role}"')


async def test_a_constraint_violation_or_a_bug_on_postgresql_stays_a_500(postgres: Database) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/duplicate")
    async def duplicate() -> None:
        async with postgres.session() as session:
            await session.execute(text("INSERT INTO notes (id) VALUES (1), (1)"))

    @app.get("/not-there")
    async def not_there() -> None:
        async with postgres.session() as session:
            await session.execute(text("SELECT * FROM no_such_table"))

    for path in ("/duplicate", "/not-there"):
        response = await _ask(app, path)
        assert response.status_code == 500, (path, response.text)
        assert "retry-after" not in response.headers


def test_a_connection_left_mid_operation_is_a_connection_error_not_a_bug() -> None:
    import asyncpg

    broken = asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    wrapped = DBAPIError("SELECT 1", {}, broken)
    assert is_database_unreachable(wrapped)
    # The same words from concurrent use of one connection (a bug) stay a bug.
    misuse = asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    assert not is_database_unreachable(DBAPIError("SELECT 1", {}, misuse))
