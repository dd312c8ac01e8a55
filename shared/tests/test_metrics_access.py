"""``/metrics`` behind a bearer token (setting ``metrics_token``), the api's and the worker's (issue 27)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from casebridge_shared import health, testing
from casebridge_shared.broker import free_port
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.web import create_app
from casebridge_shared.worker import serve_operations

TOKEN = "scrape-secret-1234"


class _Settings(ServiceSettings):
    service_name = "test-service"


def _app(token: str) -> FastAPI:
    return create_app(
        service="test",
        title="Test",
        description="",
        version="1",
        lifespan=None,
        max_body_bytes=1024,
        metrics_token=token,
    )


async def _get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    problem = response.json()
    assert problem["status"] == 401 and problem["type"].endswith("/unauthorized")
    assert "metrics_token" in problem["detail"] and "casebridge_" not in response.text


async def test_without_a_token_the_api_metrics_stay_open() -> None:
    answer = await _get(_app(""), "/metrics")
    assert answer.status_code == 200 and "casebridge_http_request_duration_seconds" in answer.text


async def test_with_a_token_the_api_metrics_want_it() -> None:
    app = _app(TOKEN)
    _assert_refused(await _get(app, "/metrics"))
    _assert_refused(await _get(app, "/metrics", authorization=f"Bearer {TOKEN}x"))
    _assert_refused(await _get(app, "/metrics", authorization=f"Basic {TOKEN}"))
    allowed = await _get(app, "/metrics", authorization=f"Bearer {TOKEN}")
    assert allowed.status_code == 200 and "casebridge_http_request_duration_seconds" in allowed.text
    # Probes need no token.
    assert (await _get(app, "/healthz")).status_code == 200
    assert (await _get(app, "/readyz")).status_code == 200
    # The API description says so.
    documented = (await _get(app, "/openapi.json")).json()["paths"]["/metrics"]["get"]["responses"]
    assert "application/problem+json" in documented["401"]["content"]


@pytest.mark.parametrize("token", ["", TOKEN])
async def test_the_worker_operations_port_wants_the_token_when_set(token: str) -> None:
    port = free_port()
    server = serve_operations("127.0.0.1", port, health.Readiness(), metrics_token=token)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            plain = await client.get("/metrics")
            if token:
                _assert_refused(plain)
                wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
                _assert_refused(wrong)
            else:
                assert plain.status_code == 200
            allowed = await client.get("/metrics", headers={"authorization": f"Bearer {token or 'any'}"})
            assert allowed.status_code == 200 and "casebridge_relay_backlog" in allowed.text
            assert (await client.get("/healthz")).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_token_is_a_setting_per_service_or_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _Settings().metrics_token.get_secret_value() == ""
    monkeypatch.setenv("CASEBRIDGE_METRICS_TOKEN", "shared-one")
    assert _Settings().metrics_token.get_secret_value() == "shared-one"
    monkeypatch.setenv("CASEBRIDGE_TEST_SERVICE_METRICS_TOKEN", "its-own")
    assert _Settings().metrics_token.get_secret_value() == "its-own"
    assert "its-own" not in repr(_Settings())


def test_a_development_placeholder_token_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEBRIDGE_METRICS_TOKEN", "changethis")
    with pytest.raises(ValidationError, match="metrics_token"):
        _Settings(environment="production")  # type: ignore[arg-type]


def test_metric_value_sums_the_matching_samples() -> None:
    text = (
        "# TYPE x_total counter\n"
        'x_total{channel="push",outcome="delivered"} 2.0\n'
        'x_total{channel="email",outcome="delivered"} 3.0\n'
        'x_total{channel="email",outcome="failed"} 5.0\n'
    )
    assert testing.metric_value(text, "x_total", outcome="delivered") == 5
    assert testing.metric_value(text, "x_total", channel="email") == 8
    assert testing.metric_value(text, "x_total", channel="webhook") == 0
