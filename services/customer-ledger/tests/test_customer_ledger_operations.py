"""customer-ledger: health, readiness, metrics, problem+json and settings precedence."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared import testing
from casebridge_shared.db import Database
from customer_ledger.settings import Settings


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


async def test_readiness_fails_when_the_database_is_gone(app: FastAPI, client: httpx.AsyncClient) -> None:
    dead = Database("postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")  # nothing listens on port 9
    app.state.readiness_checks["database"] = dead.ping
    r = await client.get("/readyz")
    await dead.dispose()
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["checks"]["database"].startswith("failed")


async def test_metrics_and_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/no-such-thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'casebridge_http_request_duration_seconds_count{method="GET",route="unmatched",service="customer-ledger"'
        in metrics.text
    )
    assert "casebridge_consumer_lag" in metrics.text and "casebridge_dead_lettered_total" in metrics.text


def test_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().port == 8004
    monkeypatch.setenv("CASEBRIDGE_PORT", "7100")
    assert Settings().port == 7100
    monkeypatch.setenv("CASEBRIDGE_CUSTOMER_LEDGER_PORT", "7101")
    assert Settings().port == 7101
    monkeypatch.setenv("CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert Settings().kafka_bootstrap_servers == "kafka:9092"


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    """nosniff, no framing, no referrer and a Content-Security-Policy (issue 25): API answers,
    problems, metrics, and the docs pages with their own policy (scripts from 'self' only)."""
    for path in ("/healthz", "/openapi.json", "/metrics", "/no-such-thing"):
        testing.assert_security_headers(await client.get(path))
    docs = await client.get("/docs")
    assert "/openapi.json" in docs.text


async def test_the_docs_pages_use_only_this_services_own_files(client: httpx.AsyncClient) -> None:
    """/docs and /redoc work offline (issue 26): Swagger UI and ReDoc come from /docs-assets/,
    no CDN, nothing else named; the files under it are served by name only."""
    await testing.assert_docs_pages_offline(client)
    for name in ("README.md", "%2E%2E%2Fweb.py", "swagger-ui/nope.js"):
        missing = await client.get(f"/docs-assets/{name}")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
