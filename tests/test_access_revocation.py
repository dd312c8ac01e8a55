"""Issue 25: a disabled user's or revoked session's token is refused by all four services within
60 s, though each verifies tokens locally (the identity events every service keeps)."""

from __future__ import annotations

from pathlib import Path

import httpx

from casebridge_shared.testing import DatabaseTemplates, wait_until

from .conftest import ADMIN, Stack, ledger_platform, notifier_platform

BOUND_SECONDS = 60  # ADR-0024 (docs/adr/0024-disabling-users-revoking-sessions-refresh-tokens.md)


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


async def test_a_disabled_or_rotated_machine_client_is_refused_by_the_services_it_reads(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    """Issue 27: machine clients (client credentials grant) are shut out like users, through the
    machine-client-disabled and machine-client-secret-rotated identity events."""
    async with (
        notifier_platform(stack, db_templates, tmp_path) as notifier,
        ledger_platform(stack, db_templates, tmp_path) as ledger,
    ):
        admin = stack.client(stack.intake, await stack.login(*ADMIN))

        async def machine_token(client_id: str, role: str) -> tuple[str, str]:
            r = await admin.post("/machine-clients", json={"client_id": client_id, "roles": [role]})
            assert r.status_code == 201, r.text
            secret = r.json()["client_secret"]
            async with httpx.AsyncClient(base_url=stack.intake.api.url, timeout=30) as c:
                t = await c.post(
                    "/auth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": client_id,
                        "client_secret": secret,
                    },
                )
            assert t.status_code == 200, t.text
            return str(t.json()["access_token"]), secret

        exporter, _ = await machine_token("ledger-exporter", "auditor")
        hooks, _ = await machine_token("webhook-admin", "webhook_admin")

        async def status(base: str, path: str, token: str) -> tuple[int, str]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                r = await c.get(path, headers={"Authorization": f"Bearer {token}"})
            return r.status_code, r.text

        assert (await status(ledger.api.url, "/audit/logins", exporter))[0] == 200
        assert (await status(notifier.api.url, "/webhooks", hooks))[0] == 200

        assert (await admin.post("/machine-clients/ledger-exporter/rotate-secret")).status_code == 200
        assert (await admin.post("/machine-clients/webhook-admin/disable")).status_code == 200

        async def refused() -> bool:
            rotated = await status(ledger.api.url, "/audit/logins", exporter)
            disabled = await status(notifier.api.url, "/webhooks", hooks)
            return (
                rotated[0] == 401
                and "revoked" in rotated[1]
                and disabled[0] == 401
                and "disabled" in disabled[1]
            )

        await wait_until(
            refused, timeout=BOUND_SECONDS, interval=0.2, message="the services refuse the machine tokens"
        )
