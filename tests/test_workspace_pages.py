"""The customer-ledger's workspace (/workspace/, issue 26 §3) in Debian's Chromium, on the embedded
stack: an admin grants a department its read rights; a finance clerk records a payment and hands
the customer on; an auditor reads and exports the access trail, verifies an entry's inclusion
proof and the growth between two checkpoints in the page, and sees tampered proofs fail. Each
main view passes axe-core (no serious or critical violation) and fits a 390px phone."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, Route

from casebridge_shared.testing import DatabaseTemplates
from casebridge_shared.testing.browser import (
    assert_accessible,
    assert_fits_phone,
    chromium,
    new_page,
    screenshot,
    until_ready,
    until_true,
)

from .conftest import ADMIN, PASSWORD, Stack, ledger_platform

FINANCE = "fay@casebridge.example"
SALES = "sol@casebridge.example"
AUDITOR = "avery@casebridge.example"


async def sign_in(page: Page, url: str, email: str, password: str) -> None:
    await page.goto(f"{url}/workspace/")
    await until_ready(page)
    await page.fill("#signin-email", email)
    await page.fill("#signin-password", password)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#tabs:not([hidden])")


async def check_view(page: Page, name: str) -> None:
    """axe-core on the view as shown, then the phone width, then back to the desktop."""
    await assert_accessible(page)
    await screenshot(page, f"workspace-{name}")
    await assert_fits_phone(page)
    await page.set_viewport_size({"width": 1280, "height": 800})


def flip_first_bit(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.slow
async def test_clerk_admin_and_auditor_journeys_in_the_workspace(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    async with ledger_platform(stack, db_templates, tmp_path) as ledger:
        url = ledger.api.url
        await stack.staff(FINANCE, "department", department="finance")
        await stack.staff(SALES, "department", department="sales")
        admin_token = await stack.login(*ADMIN)
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
        ) as admin:
            # A customer sales won, handed on to finance (admin may move anywhere).
            r = await admin.post("/customers", json={"full_name": "Lin Wei", "organisation": "Wei & Co"})
            assert r.status_code == 201, r.text
            customer_id = r.json()["id"]
            r = await admin.post(f"/customers/{customer_id}/handoff", json={"to": "finance"})
            assert r.status_code == 200, r.text

        async with chromium() as browser:
            # --- the admin grants finance its read rights -------------------------------------
            page, problems = await new_page(browser)
            await sign_in(page, url, *ADMIN)
            await page.click("#tab-grants")
            await page.wait_for_selector("#view-grants:not([hidden])")
            form = page.locator("#grant-form")
            # Bad input: the API's problem is shown next to the field it names.
            await page.select_option("#grant-department", "finance")
            await page.select_option("#grant-table", "customers")
            await page.fill("#grant-reason", " ")
            await page.fill("#grant-reason", "")
            await page.fill("#grant-fields", "full_name, shoe_size")
            await form.locator("button[type=submit]").click()
            await page.wait_for_selector("#grant-form [role=alert]:not(:empty)")
            assert "shoe_size" in (await page.text_content("#grant-form [role=alert]") or "")
            assert await page.locator("#grant-list tbody tr").count() == 0
            await page.fill("#grant-fields", "")
            for table in ("customers", "demands", "progress", "payments"):
                await page.select_option("#grant-department", "finance")
                await page.select_option("#grant-table", table)
                await form.locator("button[type=submit]").click()
                await until_true(
                    page,
                    f"document.querySelectorAll('#grant-list tbody tr').length === "
                    f"{['customers', 'demands', 'progress', 'payments'].index(table) + 1}",
                )
            assert "Finance" in (await page.inner_text("#grant-list tbody"))
            await check_view(page, "grants")
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
            ) as admin:
                grants = (await admin.get("/grants", params={"department": "finance"})).json()
            assert sorted(g["table"] for g in grants) == ["customers", "demands", "payments", "progress"]
            assert problems == []

            # --- the finance clerk records a payment and hands the customer on ---------------
            clerk, clerk_problems = await new_page(browser)
            await sign_in(clerk, url, FINANCE, PASSWORD)
            await clerk.wait_for_selector("#customer-table tbody tr")
            assert "Finance" in (await clerk.inner_text("#department-line"))
            assert await clerk.is_hidden("#tab-grants") and await clerk.is_hidden("#tab-trail")
            await clerk.get_by_role("button", name="Open Lin Wei").click()
            await clerk.wait_for_selector("#customer:not([hidden])")
            # Finance records payments and progress; hand-off is offered since finance holds it.
            assert await clerk.is_visible("#payment-box") and await clerk.is_visible("#progress-box")
            assert await clerk.is_visible("#handoff-form")
            assert await clerk.inner_text("#handoff-button") == "Hand on to Process"
            await clerk.click("#payment-box summary")
            await clerk.fill("#payment-amount", "-5")
            await clerk.fill("#payment-currency", "EUR")
            await clerk.fill("#payment-reference", "INV-2026-0042")
            await clerk.fill("#payment-received", "2026-12-01T10:30")
            await clerk.click("#payment-form button[type=submit]")
            # A refused amount is named next to its field (aria-describedby), nothing recorded.
            await clerk.wait_for_selector("#payment-form .field-error")
            assert await clerk.get_attribute("#payment-amount", "aria-invalid") == "true"
            assert await clerk.locator("#payments li").count() == 0
            await clerk.fill("#payment-amount", "250.00")
            await clerk.click("#payment-form button[type=submit]")
            await clerk.wait_for_selector("#payments li:has-text('INV-2026-0042')")
            assert "€250.00" in (await clerk.inner_text("#payments"))
            # Finance records progress too (B4): the entry appears on the customer's timeline.
            await clerk.click("#progress-box summary")
            await clerk.fill("#progress-project", "Retainer 2027")
            await clerk.fill("#progress-stage", "invoice paid")
            await clerk.click("#progress-form button[type=submit]")
            await clerk.wait_for_selector("#progress li:has-text('Retainer 2027 · invoice paid')")
            await check_view(clerk, "clerk")
            # A lost connection is shown (role=status banner) and goes once calls get through.
            await clerk.route("**/customers?*", lambda route: route.abort())
            await clerk.click("#customer-filter button[type=submit]")
            await clerk.wait_for_selector(".kit-connection:not([hidden])")
            await clerk.unroute("**/customers?*")
            await clerk.click("#customer-filter button[type=submit]")
            await clerk.wait_for_selector(".kit-connection", state="hidden")
            await clerk.fill("#handoff-reason", "paid in full")
            await clerk.click("#handoff-button")
            await until_true(clerk, "document.querySelector('#handoff-form').hidden === true")
            assert "Process" in (await clerk.inner_text("#customer-facts"))
            assert clerk_problems == []

            # A sales clerk (granted customers, demands and payments to read) is offered demands
            # only: sales records no payments or progress, and the customer is no longer theirs
            # to hand on.
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
            ) as admin:
                for table in ("customers", "demands", "payments"):
                    r = await admin.post("/grants", json={"department": "sales", "table": table})
                    assert r.status_code == 201, r.text
            sales, sales_problems = await new_page(browser)
            await sign_in(sales, url, SALES, PASSWORD)
            await sales.get_by_role("button", name="Open Lin Wei").click()
            await sales.wait_for_selector("#customer:not([hidden])")
            assert await sales.is_visible("#demand-box")
            assert await sales.is_hidden("#payment-box") and await sales.is_hidden("#progress-box")
            assert await sales.is_hidden("#handoff-form")
            assert "INV-2026-0042" in (await sales.inner_text("#payments"))  # read, not write
            assert await sales.is_hidden("#progress")  # no read right on progress: not shown
            assert sales_problems == []

            # --- the auditor: trail, CSV export, proofs verified in the page ------------------
            # A person with the auditor role, not an admin: the trail and the journal are offered,
            # customer records and read rights are not.
            assert problems == []
            await stack.staff(AUDITOR, "auditor")
            await page.close()
            page, problems = await new_page(browser)
            await sign_in(page, url, AUDITOR, PASSWORD)
            assert await page.is_hidden("#tab-customers") and await page.is_hidden("#tab-grants")
            assert await page.is_visible("#tab-trail") and await page.is_visible("#tab-journal")
            await page.click("#tab-trail")
            await page.fill("#trail-customer", customer_id)
            await page.click("#trail-form button[type=submit]")
            await page.wait_for_selector("#trail-table tbody tr:has-text('payments')")
            trail = await page.inner_text("#trail-table tbody")
            assert "paid in full" in trail and "INV-2026-0042" in trail
            assert "stage: finance → process" in trail  # the change, as the fields that changed
            await check_view(page, "trail")
            async with page.expect_download() as download_info:
                await page.click("#trail-csv")
            download = await download_info.value
            text = Path(await download.path()).read_text(encoding="utf-8")
            rows = list(csv.DictReader(io.StringIO(text)))
            payment = next(r for r in rows if r["table"] == "payments")
            assert json.loads(payment["after"])["reference"] == "INV-2026-0042"
            assert payment["changed_by"] and payment["department"] == "finance"
            handoff = next(r for r in rows if r["reason"] == "paid in full" and r["table"] == "customers")
            assert json.loads(handoff["before"])["stage"] == "finance"
            assert json.loads(handoff["after"])["stage"] == "process"
            payment_index = payment["journal_index"]

            # The export is a read on record like every other.
            await page.select_option("#trail-kind", "reads")
            await page.wait_for_selector("#trail-table tbody tr:has-text('change records export')")

            # Verify the payment's entry: signature, leaf hash and audit path, all in the page.
            await page.select_option("#trail-kind", "changes")
            await page.wait_for_selector("#trail-table tbody tr:has-text('payments')")
            await page.get_by_role("button", name=f"Verify entry {payment_index} in the journal").click()
            await page.wait_for_selector("#inclusion-result[data-outcome]")
            assert await page.get_attribute("#inclusion-result", "data-outcome") == "pass"
            assert f"entry {payment_index} is in the journal" in (await page.inner_text("#inclusion-result"))
            assert await page.locator("#inclusion-steps li.pass").count() == 3
            assert "INV-2026-0042" in (await page.inner_text("#inclusion-entry"))
            assert await page.get_attribute("#checkpoint-result", "class") == "result pass"
            await check_view(page, "journal")

            # A lying server: one hash of the audit path flipped -> shown as failing.
            async def flipped_path(route: Route) -> None:
                response = await route.fetch()
                body = await response.json()
                body["hashes"][0] = flip_first_bit(body["hashes"][0])
                await route.fulfill(response=response, json=body)

            await page.route("**/ledger/proofs/inclusion?*", flipped_path)
            await page.click("#inclusion-form button[type=submit]")
            await until_true(page, "document.querySelector('#inclusion-result').dataset.outcome === 'fail'")
            assert "FAILED" in (await page.inner_text("#inclusion-result"))
            assert await page.locator("#inclusion-steps li.fail").count() == 1
            await page.unroute("**/ledger/proofs/inclusion?*")

            # A wrong leaf: the entry's text changed (its recorded leaf hash kept) -> failing.
            async def changed_entry(route: Route) -> None:
                response = await route.fetch()
                body = await response.json()
                body["entry"] = body["entry"].replace("250", "25")
                await route.fulfill(response=response, json=body)

            await page.route(f"**/ledger/entries/{payment_index}", changed_entry)
            await page.click("#inclusion-form button[type=submit]")
            await until_true(page, "document.querySelector('#inclusion-result').dataset.outcome === 'fail'")
            assert "not the one the ledger gave" in (await page.inner_text("#inclusion-steps"))
            await page.unroute(f"**/ledger/entries/{payment_index}")

            # Back to the truth: passes again.
            await page.click("#inclusion-form button[type=submit]")
            await until_true(page, "document.querySelector('#inclusion-result').dataset.outcome === 'pass'")

            # An entry number that is no number: the problem is next to the field.
            await page.fill("#inclusion-index", "twelve")
            await page.click("#inclusion-form button[type=submit]")
            await page.wait_for_selector("#inclusion-form .field-error")

            # Consistency between the earliest and the latest checkpoint (a later one is signed
            # after more entries: the auditor's own reads are entries too).
            await page.click("#tab-trail")
            await page.wait_for_selector("#trail-table tbody tr")
            await page.click("#tab-journal")
            await until_true(page, "document.querySelectorAll('#consistency-first option').length >= 2")
            await page.select_option("#consistency-first", "0")
            await page.click("#consistency-form button[type=submit]")
            await page.wait_for_selector("#consistency-result[data-outcome]")
            assert await page.get_attribute("#consistency-result", "data-outcome") == "pass", (
                await page.inner_text("#consistency-steps")
            )
            assert "extends" in (await page.inner_text("#consistency-result"))

            async def flipped_consistency(route: Route) -> None:
                response = await route.fetch()
                body = await response.json()
                body["hashes"][-1] = flip_first_bit(body["hashes"][-1])
                await route.fulfill(response=response, json=body)

            await page.route("**/ledger/proofs/consistency?*", flipped_consistency)
            await page.click("#consistency-form button[type=submit]")
            await until_true(page, "document.querySelector('#consistency-result').dataset.outcome === 'fail'")
            await page.unroute("**/ledger/proofs/consistency?*")

            # A checkpoint signed by another key than the pinned one fails its signature check.
            await page.fill("#key-text", "casebridge.example/customer-ledger+00000000+" + "A" * 44)
            await page.click("#key-form button[type=submit]")
            await page.wait_for_selector("#key-form .field-error")
            assert problems == []

            # In Chinese: the same page, translated, and remembered.
            await page.select_option("#language", "zh-CN")
            await until_true(page, "document.documentElement.lang === 'zh-CN'")
            assert await page.inner_text("#tab-trail") == "访问记录"
            await page.reload()
            await until_ready(page)
            assert await page.inner_text("#journal-title") == "日志证明"
