"""Errors nobody handled: a database outage is a 503 the client may retry, anything else a 500."""

from __future__ import annotations

import errno

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, OperationalError

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
