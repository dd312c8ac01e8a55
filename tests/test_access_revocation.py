"""Issue 25: a disabled user's or revoked session's token is refused by all four services within
60 s, though each verifies tokens locally (the identity events every service keeps)."""

from __future__ import annotations

from pathlib import Path

import httpx

from casebridge_shared.testing import DatabaseTemplates, wait_until

from .conftest import ADMIN, Stack, ledger_platform, notifier_platform

BOUND_SECONDS = 60  # docs/decisions.md, "Disabling users"


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
