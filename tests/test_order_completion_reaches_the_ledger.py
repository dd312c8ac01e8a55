"""Issue 25 (6): an order's demand in the customer-ledger is `met` when the order completes.

The whole path, each platform for real (apis over HTTP, workers, one broker):
the customer orders on order-intake, staff close the case on case-handling,
order-intake completes the order and publishes `order-completed`, the ledger
marks the demand met. A case that staff cancel withdraws its demand the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from casebridge_shared.testing import DatabaseTemplates, wait_until

from .conftest import ADMIN, Stack, ledger_platform
from .test_order_to_case import case_of, order_reaches, place_order


async def test_closing_the_case_meets_the_order_s_demand_in_the_ledger(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    async with ledger_platform(stack, db_templates, tmp_path, relay_poll_interval_seconds=0.01) as ledger:
        product_id = await stack.product()
        customer = await stack.register_customer("ada@example.org")
        staff = stack.client(stack.cases, await stack.staff("sam@casebridge.example"))
        supervisor = stack.client(stack.cases, await stack.staff("sue@casebridge.example", "supervisor"))
        completed_id = await place_order(customer, product_id, "Is my non-compete valid?")
        cancelled_id = await place_order(customer, product_id, "Review my lease")

        case_id = (await case_of(staff, completed_id))["id"]
        for step, body in (
            ("claim", None),
            ("start", None),
            ("solution", {"summary": "The clause is void", "text": "It lacks compensation."}),
            ("close", None),
        ):
            r = await staff.post(f"/cases/{case_id}/{step}", json=body)
            assert r.status_code == 200, r.text
        other_case = (await case_of(staff, cancelled_id))["id"]
        r = await supervisor.post(f"/cases/{other_case}/cancel", json={"reason": "conflict of interest"})
        assert r.status_code == 200, r.text
        await order_reaches(customer, completed_id, "completed")
        await order_reaches(customer, cancelled_id, "cancelled")

        async with httpx.AsyncClient(base_url=ledger.api.url, timeout=30) as c:
            admin = {"Authorization": f"Bearer {await stack.login(*ADMIN)}"}
            demands: dict[str, dict[str, Any]] = {}

            async def settled() -> bool:
                r = await c.get("/customers", headers=admin)
                if r.status_code != 200 or not r.json()["items"]:
                    return False
                ada = r.json()["items"][0]["id"]
                r = await c.get(f"/customers/{ada}/demands", headers=admin)
                assert r.status_code == 200, r.text
                demands.update({d["order_id"]: d for d in r.json()})
                return (
                    demands.get(completed_id, {}).get("status") == "met"
                    and demands.get(cancelled_id, {}).get("status") == "withdrawn"
                )

            await wait_until(settled, timeout=120, message="the demands met and withdrawn in the ledger")
        assert demands[completed_id]["description"] == "Is my non-compete valid?"
