"""Operations: health, readiness, metrics, trace ids, operator CLI, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select
from typer.testing import CliRunner

from casebridge_shared import testing
from casebridge_shared.auth import Role
from casebridge_shared.db import Database
from casebridge_shared.testing import mark_published
from order_intake import settings as settings_module
from order_intake.bootstrap import Container
from order_intake.cli import app as cli
from order_intake.db import outbox
from order_intake.settings import Settings

from .conftest import Factory


async def test_health_readiness_and_metrics(client: httpx.AsyncClient, factory: Factory) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok"}
    await factory.product()
    await client.get("/products")
    metrics = (await client.get("/metrics")).text
    assert 'casebridge_http_request_duration_seconds_count{method="GET",route="/products"' in metrics
    backlog = next(
        line
        for line in metrics.splitlines()
        if line.startswith('casebridge_relay_backlog{service="order-intake"}')
    )
    assert float(backlog.split()[-1]) >= 2  # the bootstrap admin and the product, not yet relayed
    assert "casebridge_relay_oldest_unpublished_seconds" in metrics


async def test_readyz_reports_a_dead_database(settings: Settings, tmp_path: Path) -> None:
    from order_intake.main import create_application

    from .conftest import bootstrap

    container = bootstrap(settings)
    await container.keys.load()
    application = create_application(settings, container)
    async with application.router.lifespan_context(application):
        dead = Database("postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")  # nothing listens on port 9
        application.state.readiness_checks["database"] = dead.ping
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://t"
        ) as c:
            r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["checks"]["database"].startswith("failed")
    await dead.dispose()
    await container.close()


async def test_trace_id_flows_from_request_to_response(client: httpx.AsyncClient) -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await client.get("/products", headers={"traceparent": incoming})
    assert r.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    fresh = await client.get("/products")
    assert fresh.headers["traceparent"].split("-")[1] != "0af7651916cd43dd8448eb211c80319c"


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await client.delete("/orders")
    assert r.status_code == 405 and r.json()["status"] == 405


def test_settings_precedence_and_secret_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEBRIDGE_PORT", "7000")
    assert Settings().port == 7000
    monkeypatch.setenv("CASEBRIDGE_ORDER_INTAKE_PORT", "7001")
    assert Settings().port == 7001
    monkeypatch.setenv("CASEBRIDGE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="bootstrap_admin_password still has its development default"):
        Settings()
    for weak, reason in [("hunter2", "at least 12"), ("qwerty123456", "commonly used")]:
        monkeypatch.setenv("CASEBRIDGE_BOOTSTRAP_ADMIN_PASSWORD", weak)
        with pytest.raises(ValidationError, match=f"bootstrap_admin_password: .*{reason}"):
            Settings()
    monkeypatch.setenv("CASEBRIDGE_BOOTSTRAP_ADMIN_PASSWORD", "a-real-secret-from-the-vault")
    # The token signing keys are sealed at rest: outside development a secret for them is required.
    with pytest.raises(ValidationError, match="signing_keys_secret or signing_keys_secret_file is required"):
        Settings()
    monkeypatch.setenv("CASEBRIDGE_ORDER_INTAKE_SIGNING_KEYS_SECRET", "another-real-secret")
    assert Settings().environment.value == "production"


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CASEBRIDGE_ORDER_INTAKE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CASEBRIDGE_ORDER_INTAKE_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CASEBRIDGE_ENVIRONMENT", "test")
    settings_module.get_settings.cache_clear()
    yield CliRunner()
    settings_module.get_settings.cache_clear()


async def test_cli_relay_status_and_replay(
    cli_env: CliRunner, factory: Factory, container: Container
) -> None:
    await factory.product()
    await mark_published(container.db, outbox)
    import asyncio

    status = await asyncio.to_thread(cli_env.invoke, cli, ["relay", "status"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["backlog"] == 0
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    replay = await asyncio.to_thread(cli_env.invoke, cli, ["relay", "replay", "--since", since])
    assert replay.exit_code == 0, replay.output
    assert "events queued for republishing" in replay.output
    async with container.db.session() as s:
        unpublished = (await s.execute(select(outbox.outbox.c.id))).all()
    assert len(unpublished) >= 1
    bad = await asyncio.to_thread(cli_env.invoke, cli, ["relay", "replay", "--since", "yesterday"])
    assert bad.exit_code != 0


async def test_cli_rotates_keys_and_refuses_demo_outside_development(
    cli_env: CliRunner, container: Container
) -> None:
    import asyncio

    before = {k["kid"] for k in container.keys.jwks()["keys"]}
    result = await asyncio.to_thread(cli_env.invoke, cli, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    await container.keys.load()
    after = {k["kid"] for k in container.keys.jwks()["keys"]}
    assert before < after and len(after) == 2
    demo = await asyncio.to_thread(cli_env.invoke, cli, ["seed-demo"])
    assert demo.exit_code != 0


async def test_relay_status_needs_an_admin_token(client: httpx.AsyncClient, factory: Factory) -> None:
    assert (await client.get("/relay/status")).status_code == 401
    staff = await factory.user(Role.STAFF)
    assert (await client.get("/relay/status", headers=factory.auth(staff))).status_code == 403


async def test_cli_relay_status_says_first_when_the_relay_is_failing_and_what_the_broker_acknowledged(
    cli_env: CliRunner, container: Container
) -> None:
    import asyncio

    from casebridge_shared.db import utcnow

    now = utcnow()
    async with container.db.write_session() as s:
        await s.execute(
            insert(outbox.relay_offsets).values(
                topic="casebridge.orders.v1",
                partition=2,
                cluster_id="c-1",
                acknowledged_offset=41,
                updated_at=now,
            )
        )
        for error in (
            "broker reset: topic casebridge.orders.v1 is gone from the broker; 7 retained events",
            None,
        ):
            await s.execute(
                insert(outbox.relay_runs).values(
                    relay="r", started_at=now, finished_at=now, detected=7, published=0, failed=0, error=error
                )
            )
        await s.execute(
            insert(outbox.relay_runs).values(
                relay="r",
                started_at=now,
                finished_at=now,
                detected=0,
                published=0,
                failed=0,
                error="TopicMisconfigured: topic casebridge.orders.v1 has 4 partitions where 6 are wanted",
            )
        )
        await s.commit()
    result = await asyncio.to_thread(cli_env.invoke, cli, ["relay", "status"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["state"].startswith(
        "failing: TopicMisconfigured: topic casebridge.orders.v1 has 4 partitions"
    )
    assert status["broker_resets_in_last_runs"] == [
        "broker reset: topic casebridge.orders.v1 is gone from the broker; 7 retained events"
    ]
    assert [
        (a["topic"], a["partition"], a["cluster_id"], a["acknowledged_offset"])
        for a in status["acknowledged_by_broker"]
    ] == [("casebridge.orders.v1", 2, "c-1", 41)]


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


async def test_cli_manages_machine_clients(cli_env: CliRunner, client: httpx.AsyncClient) -> None:
    """`order-intake machine-clients`: create (secret printed once), list, rotate-secret, disable;
    the secret it prints gets a token, and bad input exits non-zero with nothing written."""
    import asyncio

    created = await asyncio.to_thread(
        cli_env.invoke, cli, ["machine-clients", "create", "ledger-exporter", "--role", "auditor"]
    )
    assert created.exit_code == 0, created.output
    shown = json.loads(created.output)
    assert shown["roles"] == ["auditor"] and shown["client_secret"].startswith("cbs_")
    grant = {"grant_type": "client_credentials", "client_id": "ledger-exporter"}
    token = await client.post("/auth/token", data={**grant, "client_secret": shown["client_secret"]})
    assert token.status_code == 200, token.text

    for bad in (
        ["machine-clients", "create", "root-client", "--role", "admin"],
        ["machine-clients", "create", "ledger-exporter", "--role", "auditor"],  # exists already
        ["machine-clients", "disable", "nobody"],
    ):
        result = await asyncio.to_thread(cli_env.invoke, cli, bad)
        assert result.exit_code != 0, (bad, result.output)
    listed = await asyncio.to_thread(cli_env.invoke, cli, ["machine-clients", "list"])
    assert [json.loads(line)["client_id"] for line in listed.output.splitlines()] == ["ledger-exporter"]
    assert "secret" not in listed.output.replace("secret_rotated_at", "")

    rotated = await asyncio.to_thread(
        cli_env.invoke, cli, ["machine-clients", "rotate-secret", "ledger-exporter"]
    )
    assert rotated.exit_code == 0, rotated.output
    new_secret = json.loads(rotated.output)["client_secret"]
    assert (
        await client.post("/auth/token", data={**grant, "client_secret": shown["client_secret"]})
    ).status_code == 401
    assert (await client.post("/auth/token", data={**grant, "client_secret": new_secret})).status_code == 200
    disabled = await asyncio.to_thread(cli_env.invoke, cli, ["machine-clients", "disable", "ledger-exporter"])
    assert disabled.exit_code == 0 and json.loads(disabled.output)["active"] is False, disabled.output
    assert (await client.post("/auth/token", data={**grant, "client_secret": new_secret})).status_code == 401
