"""Logins and orders on order-intake reach the customer-ledger (issue 6, B1/B2/B5/B8).

A login is on record in the journal; an order makes a customer held by sales
with a demand, which a sales user sees once admin granted it, with real tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlalchemy import select

from casebridge_shared.testing import DatabaseTemplates, wait_until
from customer_ledger.access.models import LoginRecord
from customer_ledger.bootstrap import bootstrap
from customer_ledger.journal import service as journal
from customer_ledger.journal.signed_note import Verifier, open_checkpoint

from .conftest import ADMIN, Stack, ledger_platform


async def test_logins_and_orders_on_order_intake_reach_the_ledger(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    async with ledger_platform(stack, db_templates, tmp_path) as ledger:
        settings = ledger.settings
        customer = await stack.register_customer("ada@example.org")  # logs in once
        r = await customer.post(
            "/orders", json={"product_id": await stack.product(), "description": "Review my new contract"}
        )
        assert r.status_code == 201, r.text
        order_id = r.json()["id"]
        async with httpx.AsyncClient(base_url=stack.intake.api.url) as c:
            # A peer's X-Forwarded-For is not believed unless it is a trusted proxy (none here):
            # the audit has the real peer address, not the one it claims (issue 25).
            r = await c.post(
                "/auth/token",
                data={"username": "ada@example.org", "password": "wrong-password-1"},
                headers={"X-Forwarded-For": "198.51.100.66"},
            )
            assert r.status_code == 401
        container = bootstrap(settings)
        try:

            async def recorded() -> bool:
                async with container.db.session() as s:
                    rows = (await s.execute(select(LoginRecord))).scalars().all()
                return {(r.email, r.outcome) for r in rows} >= {
                    ("ada@example.org", "success"),
                    ("ada@example.org", "failure"),
                }

            await wait_until(recorded, timeout=90, message="the logins in the ledger")
            async with container.db.session() as s:
                failure = (
                    await s.execute(select(LoginRecord).where(LoginRecord.outcome == "failure"))
                ).scalar_one()
                entry = await journal.entry_at(s, failure.journal_index)
            assert json.loads(entry.body)["reason"] == "wrong password"
            assert failure.client_ip == "127.0.0.1"
            assert "wrong-password-1" not in entry.body
        finally:
            await container.close()

        # Anyone can check the journal's checkpoint with the public key; the admin's audit works
        # with a real token from order-intake.
        async with httpx.AsyncClient(base_url=ledger.api.url) as c:
            key = Verifier.parse((await c.get("/ledger/public-key")).text.strip())
            checkpoint = open_checkpoint((await c.get("/ledger/checkpoint")).text, [key])
            assert checkpoint.size >= 3  # account created, two logins
            admin_token = await stack.login(*ADMIN)
            r = await c.get(
                "/audit/logins",
                params={"email": "ada@example.org"},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            assert r.status_code == 200, r.text
            assert {i["outcome"] for i in r.json()["items"]} == {"success", "failure"}

            # The order made Ada a customer of sales, with her need as a demand.
            admin = {"Authorization": f"Bearer {admin_token}"}
            sales_token = await stack.staff("sales@example.org", "department", department="sales")
            sales = {"Authorization": f"Bearer {sales_token}"}

            async def customer_known() -> bool:
                r = await c.get("/customers", headers=admin)
                return r.status_code == 200 and r.json()["total"] == 1

            await wait_until(customer_known, timeout=90, message="the order's customer in the ledger")
            ada = (await c.get("/customers", headers=admin)).json()["items"][0]
            assert ada["stage"] == "sales" and ada["email"] == "ada@example.org"
            assert (await c.get(f"/customers/{ada['id']}/demands", headers=sales)).status_code == 403
            for table in ("customers", "demands"):
                r = await c.post("/grants", json={"department": "sales", "table": table}, headers=admin)
                assert r.status_code == 201, r.text
            r = await c.get(f"/customers/{ada['id']}/demands", headers=sales)
            assert r.status_code == 200, r.text
            [demand] = r.json()
            assert demand["order_id"] == order_id and demand["description"] == "Review my new contract"
