"""Issue 25: a disabled user's or revoked session's token is refused by all four services within
60 s, though each verifies tokens locally (the identity events every service keeps)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

import customer_ledger.main
import customer_ledger.worker
from casebridge_shared.broker import free_port
from casebridge_shared.testing import DatabaseTemplates, wait_until
from customer_ledger.db import MIGRATIONS as LEDGER_MIGRATIONS
from customer_ledger.settings import Settings as LedgerSettings

from .conftest import ADMIN, Api, Platform, Stack, Worker, notifier_platform

BOUND_SECONDS = 60  # docs/decisions.md, "Disabling users"


@asynccontextmanager
async def ledger_platform(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> AsyncIterator[Platform]:
    var = tmp_path / "ledger"
    var.mkdir()
    url = await db_templates.fresh("customer-ledger", LEDGER_MIGRATIONS, var)
    port = free_port()
    settings = LedgerSettings(
        environment="test",
        database_url=url,
        var_dir=var,
        port=port,
        kafka_bootstrap_servers=stack.broker.bootstrap_servers,
        token_issuer=stack.intake.api.url,
        log_json=False,
        worker_metrics_port=0,
    )
    platform = Platform(
        settings,
        Api(lambda: customer_ledger.main.create_application(settings), port),
        Worker(lambda stop: customer_ledger.worker.work(settings, stop)),
    )
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()
        await db_templates.drop(url)


async def test_disabled_users_and_revoked_sessions_are_refused_by_every_service(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    async with (
        notifier_platform(stack, db_templates, tmp_path) as notifier,
        ledger_platform(stack, db_templates, tmp_path) as ledger,
    ):
        # What an admin may read on each service.
        reads = {
            "order-intake": (stack.intake, "/me"),
            "case-handling": (stack.cases, "/cases"),
            "notifier": (notifier, "/notifications"),
            "customer-ledger": (ledger, "/audit/logins"),
        }

        async def statuses(token: str) -> dict[str, tuple[int, str]]:
            found = {}
            for name, (platform, path) in reads.items():
                async with httpx.AsyncClient(base_url=platform.api.url, timeout=30) as c:
                    r = await c.get(path, headers={"Authorization": f"Bearer {token}"})
                found[name] = (r.status_code, r.text if r.status_code == 401 else "")
            return found

        async def wait_for_all(token: str, *, refused: str | None) -> None:
            last: dict[str, tuple[int, str]] = {}

            async def reached() -> bool:
                nonlocal last
                last = await statuses(token)
                if refused is None:
                    return all(status == 200 for status, _ in last.values())
                return all(status == 401 and refused in text for status, text in last.values())

            await wait_until(
                reached,
                timeout=BOUND_SECONDS,
                interval=0.2,
                message=f"every service {'refuses (' + refused + ')' if refused else 'accepts'} the token",
            )

        root = stack.client(stack.intake, await stack.login(*ADMIN))
        ops_token = await stack.staff("ops@example.org", "admin")
        ops_id = (await stack.client(stack.intake, ops_token).get("/me")).json()["id"]
        await wait_for_all(ops_token, refused=None)

        # Disabled: refused everywhere within the bound, and cannot sign in.
        r = await root.post(f"/users/{ops_id}/disable")
        assert r.status_code == 200, r.text
        await wait_for_all(ops_token, refused="disabled")
        async with httpx.AsyncClient(base_url=stack.intake.api.url) as c:
            login = await c.post(
                "/auth/token", data={"username": "ops@example.org", "password": "correct-horse-battery"}
            )
        assert login.status_code == 401

        # Enabled again: a new sign-in is accepted everywhere; the old token stays refused.
        assert (await root.post(f"/users/{ops_id}/enable")).status_code == 200
        second = await stack.login("ops@example.org")
        await wait_for_all(second, refused=None)
        assert all(status == 401 for status, _ in (await statuses(ops_token)).values())

        # Sessions revoked: the token is refused everywhere within the bound; a new one works.
        assert (await root.post(f"/users/{ops_id}/revoke-sessions")).status_code == 200
        await wait_for_all(second, refused="revoked")
        await wait_for_all(await stack.login("ops@example.org"), refused=None)
