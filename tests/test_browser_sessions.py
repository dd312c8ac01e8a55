"""Issue 26: browser sign-in at a service other than the issuer. The notifier's /session exchanges
the credentials at order-intake's /auth/token over HTTP; both apis really run (uvicorn), the
notifier verifies the tokens against order-intake's published keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import notifier.main
import order_intake.main
from casebridge_shared.auth import Role
from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer, DatabaseTemplates
from notifier.db import MIGRATIONS as NOTIFIER_MIGRATIONS
from notifier.settings import Settings as NotifierSettings
from order_intake.bootstrap import bootstrap
from order_intake.db import MIGRATIONS as INTAKE_MIGRATIONS
from order_intake.identity import service as identity_service
from order_intake.identity.models import UserCreate
from order_intake.settings import Settings as IntakeSettings

from .conftest import PASSWORD

PROBLEM = "application/problem+json"
ACCESS, REFRESH, CSRF = "cb_notifier_access", "cb_notifier_refresh", "cb_notifier_csrf"
STAFF = "sam@casebridge.example"


@dataclass
class Pair:
    intake: ApiServer
    alerts: ApiServer


@pytest.fixture
async def pair(db_templates: DatabaseTemplates, tmp_path: Path) -> AsyncIterator[Pair]:
    intake_port, alerts_port = free_port(), free_port()
    intake_db = await db_templates.fresh("order-intake", INTAKE_MIGRATIONS, tmp_path)
    (tmp_path / "notifier").mkdir()
    alerts_db = await db_templates.fresh("notifier", NOTIFIER_MIGRATIONS, tmp_path / "notifier")
    common = {"environment": "test", "kafka_bootstrap_servers": "127.0.0.1:9", "log_json": False}
    issuer = f"http://127.0.0.1:{intake_port}"
    intake_settings = IntakeSettings(
        **common,
        database_url=intake_db,
        var_dir=tmp_path / "intake-var",
        port=intake_port,
        token_issuer=issuer,
        login_failures_per_account=3,
    )
    alerts_settings = NotifierSettings(
        **common,
        database_url=alerts_db,
        var_dir=tmp_path / "notifier",
        port=alerts_port,
        token_issuer=issuer,
    )
    container = bootstrap(intake_settings)
    await container.keys.load()
    async with container.uow() as uow:
        await identity_service.create_user(
            uow, UserCreate(email=STAFF, password=PASSWORD, full_name="Sam Staff", roles=[Role.STAFF])
        )
    await container.close()
    intake = ApiServer(lambda: order_intake.main.create_application(intake_settings), intake_port)
    alerts = ApiServer(lambda: notifier.main.create_application(alerts_settings), alerts_port)
    await intake.start()
    await alerts.start()
    try:
        yield Pair(intake, alerts)
    finally:
        await alerts.stop()
        await intake.stop()
        await db_templates.drop(alerts_db)
        await db_templates.drop(intake_db)


def _browser(pair: Pair) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=pair.alerts.url, timeout=30)


async def test_sign_in_at_the_notifier_is_checked_by_the_issuer(pair: Pair) -> None:
    async with _browser(pair) as browser:
        signed_in = await browser.post("/session", json={"email": STAFF, "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["email"] == STAFF and signed_in.json()["roles"] == ["staff"]
        assert {ACCESS, REFRESH, CSRF} <= {c.name for c in browser.cookies.jar}

        # The notifier's API by cookie: reads freely, writes with the CSRF header only.
        assert (await browser.get("/notifications")).status_code == 200
        refused = await browser.post("/notifications/read-all")
        assert refused.status_code == 403 and refused.json()["detail"] == "CSRF token missing or wrong"
        csrf = {"X-CSRF-Token": browser.cookies.get(CSRF, path="/") or ""}
        assert (await browser.post("/notifications/read-all", headers=csrf)).status_code == 200

        # Refresh goes to the issuer too, and rotates.
        old = browser.cookies.get(REFRESH, path="/session")
        refreshed = await browser.post("/session/refresh", headers=csrf)
        assert refreshed.status_code == 200, refreshed.text
        assert browser.cookies.get(REFRESH, path="/session") not in (None, old)

        # The cookies of one service mean nothing to another (same host, other port).
        intake_me = await httpx.AsyncClient(base_url=pair.intake.url, cookies=browser.cookies).get("/me")
        assert intake_me.status_code == 401

        current = browser.cookies.get(REFRESH, path="/session")
        csrf = {"X-CSRF-Token": browser.cookies.get(CSRF, path="/") or ""}
        assert (await browser.delete("/session", headers=csrf)).status_code == 204
        assert (await browser.get("/session")).status_code == 401
    # Signing out revoked the session at the issuer: its refresh token is refused there.
    async with httpx.AsyncClient(base_url=pair.intake.url) as issuer:
        form = {"grant_type": "refresh_token", "refresh_token": current or ""}
        assert (await issuer.post("/auth/token", data=form)).status_code == 401


async def test_the_issuers_refusals_reach_the_browser(pair: Pair) -> None:
    async with _browser(pair) as browser:
        wrong = await browser.post("/session", json={"email": STAFF, "password": "not the password"})
        assert wrong.status_code == 401 and wrong.headers["content-type"] == PROBLEM
        assert wrong.json()["detail"] == "wrong email or password"
        for _ in range(3):
            await browser.post("/session", json={"email": STAFF, "password": "not the password"})
        throttled = await browser.post("/session", json={"email": STAFF, "password": PASSWORD})
        assert throttled.status_code == 429 and throttled.headers["content-type"] == PROBLEM
        assert int(throttled.headers["Retry-After"]) >= 1
        assert "set-cookie" not in throttled.headers


async def test_sign_in_while_the_issuer_is_down_is_503(pair: Pair) -> None:
    await pair.intake.stop()
    async with _browser(pair) as browser:
        answer = await browser.post("/session", json={"email": STAFF, "password": PASSWORD})
    assert answer.status_code == 503 and answer.headers["content-type"] == PROBLEM
    assert "cannot be reached" in answer.json()["detail"]
    await pair.intake.start()  # the fixture stops it again
