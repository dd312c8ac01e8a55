"""Issue 26 §3 "Admin": the administration pages of order-intake and the notifier, in headless
Chromium against the real services (products, users and roles, webhooks, routing rules)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Page

from casebridge_shared.testing import DatabaseTemplates, wait_until
from casebridge_shared.testing.browser import (
    assert_accessible,
    assert_fits_phone,
    chromium,
    new_page,
    screenshot,
    until_ready,
    until_true,
)

from .conftest import ADMIN, PASSWORD, Stack, notifier_knows, notifier_platform
from .test_order_to_case import place_order

BOUND_SECONDS = 60  # ADR-0024 (docs/adr/0024-disabling-users-revoking-sessions-refresh-tokens.md)


async def open_page(browser: Browser, url: str, problems: list[list[str]]) -> Page:
    """The page at ``url``, ready; its script errors and CSP blocks go to a list in ``problems``."""
    page, found = await new_page(browser)
    problems.append(found)

    async def accept(dialog: Dialog) -> None:  # "Archive ...?", "Disable ...?"
        await dialog.accept()

    page.on("dialog", accept)
    await page.goto(url)
    await until_ready(page)
    return page


async def sign_in(page: Page, email: str, password: str) -> None:
    await page.fill("#login-form [name=email]", email)
    await page.fill("#login-form [name=password]", password)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#login", state="hidden")


@pytest.mark.slow
async def test_an_admin_manages_products_and_users_on_order_intake(stack: Stack) -> None:
    sam_token = await stack.staff("sam@casebridge.example", "staff")
    await stack.staff("nina@casebridge.example", "staff")
    intake = stack.intake.api.url
    problems: list[list[str]] = []
    async with chromium() as browser:
        page = await open_page(browser, f"{intake}/admin/", problems)
        await sign_in(page, *ADMIN)
        await page.wait_for_selector("#admin:not([hidden])")
        assert await page.is_hidden("#denied")

        # A product: created, with the price formatted for the language.
        form = page.locator("#product-form")
        await form.locator("[name=title]").fill("Will and testament")
        await form.locator("[name=description]").fill("A lawyer drafts your will.")
        await form.locator("[name=deliverables]").fill("Draft will\nSigning appointment")
        await form.locator("[name=category]").fill("Estate Planning")  # not a valid category
        await form.locator("[name=price]").fill("390.00")
        await form.locator("button[type=submit]").click()
        # The API's problem shows next to the field it names.
        error = form.locator("label:has([name=category]) + .field-error")
        await error.wait_for()
        assert await form.locator("[name=category]").get_attribute("aria-invalid") == "true"
        await form.locator("[name=category]").fill("estate")
        await form.locator("button[type=submit]").click()
        row = page.locator("#product-rows tr", has_text="Will and testament")
        await row.wait_for()
        assert "€390.00" in await row.inner_text()

        # Someone else changes it meanwhile: the page's edit is refused and says so, nothing lost.
        async with httpx.AsyncClient(base_url=intake, timeout=30) as c:
            admin_auth = {"Authorization": f"Bearer {await stack.login(*ADMIN)}"}
            products = (await c.get("/products", params={"q": "will"})).json()["items"]
            product_id = products[0]["id"]
            await row.get_by_role("button", name="Edit").click()
            r = await c.patch(
                f"/products/{product_id}", json={"price": "420.00"}, headers=admin_auth | {"If-Match": '"1"'}
            )
            assert r.status_code == 200, r.text
        await form.locator("[name=price]").fill("400.00")
        await form.locator("button[type=submit]").click()
        await form.locator("[role=alert]", has_text="Someone else changed this").wait_for()
        assert await form.locator("[name=price]").input_value() == "400.00"  # the typed value stays
        await until_true(page, "document.querySelector('#product-rows').innerText.includes('€420.00')")

        # Archived: out of the public catalog, still listed here as archived.
        await row.get_by_role("button", name="Archive").click()
        await page.locator("#product-status", has_text="Archived").wait_for()
        await row.locator("td", has_text="Archived").wait_for()
        async with httpx.AsyncClient(base_url=intake, timeout=30) as c:
            public = (await c.get("/products", params={"q": "will"})).json()
        assert public["total"] == 0

        # Users: a weak first password is refused next to the field; a good one creates the account.
        users = page.locator("#user-form")
        await users.locator("[name=full_name]").fill("Fin Clerk")
        await users.locator("[name=email]").fill("fin@casebridge.example")
        await users.locator("[name=password]").fill("short")
        await users.locator("input[value=staff]").uncheck()
        await users.locator("input[value=department]").check()
        await users.locator("[name=department]").select_option("finance")
        await users.locator("button[type=submit]").click()
        await users.locator("label:has([name=password]) + .field-error").wait_for()
        await users.locator("[name=password]").fill("a long enough clerk password")
        await users.locator("button[type=submit]").click()
        await page.locator("#user-rows tr", has_text="fin@casebridge.example").wait_for()

        # Roles: Nina becomes a supervisor too.
        nina = page.locator("#user-rows tr", has_text="nina@casebridge.example")
        await nina.get_by_role("button", name="Change roles").click()
        await page.locator("#roles-form input[value=supervisor]").check()
        await page.locator("#roles-form button[type=submit]").click()
        await nina.locator("td", has_text="Supervisor").wait_for()

        # Sam is disabled: his token is refused here at once and by case-handling within the bound.
        sam = page.locator("#user-rows tr", has_text="sam@casebridge.example")
        await sam.get_by_role("button", name="Disable").click()
        await sam.locator("td", has_text="Disabled").wait_for()
        await assert_accessible(page)
        await screenshot(page, "admin-order-intake")
        async with httpx.AsyncClient(timeout=30) as c:
            bearer = {"Authorization": f"Bearer {sam_token}"}
            assert (await c.get(f"{intake}/me", headers=bearer)).status_code == 401

            async def cases_refuse() -> bool:
                r = await c.get(f"{stack.cases.api.url}/cases", headers=bearer)
                return r.status_code == 401

            await wait_until(cases_refuse, timeout=BOUND_SECONDS, message="case-handling refuses Sam")

            # Enabled again he signs in anew (his old token stays refused); Nina is signed out everywhere.
            await sam.get_by_role("button", name="Enable").click()
            await sam.locator("td", has_text="Active").wait_for()
            assert (await c.get(f"{intake}/me", headers=bearer)).status_code == 401
            nina_token = await stack.login("nina@casebridge.example")
            await nina.get_by_role("button", name="Sign out everywhere").click()
            await page.locator("#user-status", has_text="nina@casebridge.example is signed out").wait_for()
            r = await c.get(f"{intake}/me", headers={"Authorization": f"Bearer {nina_token}"})
            assert r.status_code == 401

        # Chinese, and a phone's width.
        await page.select_option("select[data-language-picker]", "zh-CN")
        await page.locator("#products-heading", has_text="产品").wait_for()
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        await assert_fits_phone(page)
        await assert_accessible(page)
        await screenshot(page, "admin-order-intake-phone")

        # Someone without the admin role gets a clear page, not broken buttons.
        other = await open_page(browser, f"{intake}/admin/", problems)
        await sign_in(other, "nina@casebridge.example", PASSWORD)
        await other.wait_for_selector("#denied:not([hidden])")
        assert await other.is_hidden("#admin")
        await assert_accessible(other)
        assert await other.locator("#denied h2").inner_text() in {
            "You need the admin role",
            "您需要管理员角色",
        }
    assert problems and all(found == [] for found in problems)


@pytest.mark.slow
async def test_an_admin_sets_up_webhooks_teams_and_routing_on_the_notifier(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    await stack.staff("sam@casebridge.example", "staff")
    problems: list[list[str]] = []
    async with notifier_platform(stack, db_templates, tmp_path) as alerts, chromium() as browser:
        await notifier_knows(alerts, "sam@casebridge.example")
        url = alerts.api.url
        page = await open_page(browser, f"{url}/admin/", problems)
        await sign_in(page, *ADMIN)  # the notifier's /session exchanges them at order-intake
        await page.wait_for_selector("#admin:not([hidden])")

        # A webhook on a private address is refused next to the field; a good one shows its secret once.
        hook = page.locator("#webhook-form")
        await hook.locator("[name=url]").fill("http://10.1.2.3/hook")
        await hook.locator("button[type=submit]").click()
        await hook.locator("label:has([name=url]) + .field-error").wait_for()
        await hook.locator("[name=url]").fill("http://127.0.0.1:9/casebridge")
        await hook.locator("[name=description]").fill("Case board")
        await hook.locator("button[type=submit]").click()
        await page.wait_for_selector("#secret-box:not([hidden])")
        secret = await page.inner_text("#secret")
        assert secret.startswith("whsec_")
        row = page.locator("#webhook-rows tr", has_text="Case board")
        await row.wait_for()
        await assert_accessible(page)
        await screenshot(page, "admin-notifier")
        await page.click("#secret-done")
        assert await page.is_hidden("#secret-box") and await page.inner_text("#secret") == ""
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            admin = {"Authorization": f"Bearer {await stack.login(*ADMIN)}"}
            listed = (await c.get("/webhooks", headers=admin)).json()
            assert secret not in str(listed)  # shown once: never listed again
            webhook_id = listed[0]["id"]

            # A new order's case event goes to the webhook, whose address answers nothing:
            # the delivery and its failed attempt show in the deliveries list.
            customer = await stack.register_customer("ada@example.org")
            await place_order(customer, await stack.product())

            async def attempted() -> bool:
                page_ = (await c.get("/deliveries", params={"channel": "webhook"}, headers=admin)).json()
                return any(d["attempts"] >= 1 for d in page_["items"])

            await wait_until(attempted, timeout=90, message="the webhook delivery was attempted")
            await page.click("#delivery-filter button[type=submit]")
            delivery = page.locator("#delivery-rows tr", has_text="webhook").first
            await delivery.get_by_role("button", name="Show attempts").click()
            await delivery.locator(".attempts li", has_text="Failed").first.wait_for()
            await row.get_by_role("button", name="Disable").click()
            await row.locator("td", has_text="Disabled").wait_for()
            assert (await c.get(f"/webhooks/{webhook_id}", headers=admin)).json()["active"] is False

            # Edit (the form fills with it, saves with If-Match), then a new secret, shown once.
            await row.get_by_role("button", name="Edit").click()
            assert await hook.locator("[name=url]").input_value() == "http://127.0.0.1:9/casebridge"
            await hook.locator("[name=description]").fill("Case board v2")
            await hook.locator("#webhook-submit").click()
            await page.locator("#webhook-rows tr", has_text="Case board v2").wait_for()
            await row.get_by_role("button", name="Rotate secret").click()
            await page.wait_for_selector("#secret-box:not([hidden])")
            rotated = await page.inner_text("#secret")
            assert rotated.startswith("whsec_") and rotated != secret
            await page.click("#secret-done")
            shown = (await c.get(f"/webhooks/{webhook_id}", headers=admin)).json()
            assert shown["description"] == "Case board v2" and shown["version"] == 4
            assert shown["previous_secret_expires_at"] is not None and rotated not in str(shown)
            # Deleted: gone from the list and the API.
            await row.get_by_role("button", name="Delete").click()
            await page.locator("#webhook-status", has_text="deleted").wait_for()
            await row.wait_for(state="detached")  # the list reloads after the status is said
            assert (await c.get(f"/webhooks/{webhook_id}", headers=admin)).status_code == 404
            # Its waiting delivery was cancelled (failed): offered again, refused with the reason.
            await page.click("#delivery-filter button[type=submit]")
            # (By the row's channel: an attempt in flight at the delete may have put its own reason.)
            cancelled = page.locator("#delivery-rows tr", has_text="webhook").first
            await cancelled.get_by_role("button", name="Send again").click()
            await page.locator("#delivery-status", has_text="has been deleted").wait_for()

            # A team, then the rule that routes a category to it.
            team = page.locator("#team-form")
            await team.locator("[name=name]").fill("Employment Desk")  # not a valid team name
            await team.locator("button[type=submit]").click()
            await page.locator("#team-form [role=alert]:not(:empty)").wait_for()
            await team.locator("[name=name]").fill("employment-desk")
            await team.get_by_label("Sam Staff · sam@casebridge.example").check()  # chosen by name
            await team.locator("button[type=submit]").click()
            await page.locator("#team-rows tr", has_text="employment-desk").wait_for()
            await page.locator("#team-rows tr", has_text="Sam Staff").wait_for()
            teams = (await c.get("/teams", headers=admin)).json()
            staff = (await c.get("/staff", headers=admin)).json()
            sam_id = next(p["user_id"] for p in staff if p["email"] == "sam@casebridge.example")
            assert [(t["name"], t["members"]) for t in teams] == [("employment-desk", [sam_id])]
            rule = page.locator("#rule-form")
            await rule.locator("[name=category]").fill("employment")
            await rule.locator("[name=team]").select_option("employment-desk")
            await rule.locator("[name=claim_within_minutes]").fill("30")
            await rule.locator("[name=escalate_again_after_minutes]").fill("10")  # must be later
            await rule.locator("button[type=submit]").click()
            await rule.locator("[role=alert]:not(:empty)").wait_for()
            await rule.locator("[name=escalate_again_after_minutes]").fill("60")
            await rule.locator("button[type=submit]").click()
            await page.locator("#rule-rows tr", has_text="employment-desk").wait_for()
            rules = (await c.get("/routing-rules", headers=admin)).json()
            assert [(r["product_category"], r["team"], r["claim_within_minutes"]) for r in rules] == [
                ("employment", "employment-desk", 30)
            ]
            await (
                page.locator("#rule-rows tr", has_text="employment")
                .get_by_role("button", name="Remove")
                .click()
            )
            await page.locator("#rule-status", has_text="removed").wait_for()
            assert (await c.get("/routing-rules", headers=admin)).json() == []

        await page.select_option("select[data-language-picker]", "zh-CN")
        await page.locator("#rules-heading", has_text="分派规则").wait_for()
        await assert_fits_phone(page)
        await assert_accessible(page)
        await screenshot(page, "admin-notifier-phone")

        # Staff without the admin role: a clear page, no actions.
        other = await open_page(browser, f"{url}/admin/", problems)
        await sign_in(other, "sam@casebridge.example", PASSWORD)
        await other.wait_for_selector("#denied:not([hidden])")
        assert await other.is_hidden("#admin")
        await assert_accessible(other)
    assert problems and all(found == [] for found in problems)
