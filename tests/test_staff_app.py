"""The staff alerts app (PWA at /app) in headless Chromium: sign in with the notifier's cookie
session (checked by order-intake), a new order appears on the page without a reload (issue 5,
section 3) and links to its case in the staff console; accessible, fits a phone, English and
Chinese (issue 26). Everything is really running."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

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

from .conftest import PASSWORD, Stack, notifier_knows, notifier_platform
from .test_order_to_case import place_order


@pytest.mark.slow
async def test_a_new_order_appears_in_the_staff_app_without_a_reload(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    async with notifier_platform(stack, db_templates, tmp_path) as alerts:
        await stack.staff("sam@casebridge.example", "staff")
        await notifier_knows(alerts, "sam@casebridge.example")
        product_id = await stack.product()
        async with chromium() as browser:
            # problems: script errors and anything the page's Content-Security-Policy blocked.
            page, problems = await new_page(browser)
            await page.goto(f"{alerts.api.url}/app/")
            await until_ready(page)
            # Installable: a manifest, and a service worker that controls /app/.
            manifest = await page.get_attribute("link[rel=manifest]", "href")
            assert manifest == "/app/manifest.webmanifest"
            await until_true(
                page, "navigator.serviceWorker.getRegistration('/app/').then(r => !!r && !!r.active)"
            )
            await assert_accessible(page)
            await screenshot(page, "staff-alerts-sign-in")

            # Sign in: the page posts to the notifier's own /session, which asks order-intake.
            await page.fill("#email", "sam@casebridge.example")
            await page.fill("#password", "not the password")
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("#login-error:has-text('Wrong email or password')")
            await assert_accessible(page)
            # Throttled (429, issue 25): the app says so, not "wrong password".
            guess = {"username": "eve@example.org", "password": "guess-guess"}
            async with httpx.AsyncClient(base_url=stack.intake.api.url, timeout=30) as c:
                for _ in range(5):
                    assert (await c.post("/auth/token", data=guess)).status_code == 401
            await page.fill("#email", "eve@example.org")
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("#login-error:has-text('Too many failed sign-ins. Try again')")
            await page.fill("#email", "sam@casebridge.example")
            await page.fill("#password", PASSWORD)
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("#inbox:not([hidden])")
            # Issue 26: the sign-in form is gone from the screen (``hidden`` is not overridden
            # by the card's display), and the earlier failure's message with it.
            assert await page.is_hidden("#login") and await page.is_visible("#inbox")
            assert await page.text_content("#login-error") == ""
            await until_true(page, "document.getElementById('status').textContent === 'Live'")
            # The session is in HttpOnly cookies: no token where a script could read it.
            assert "access" not in await page.evaluate("document.cookie")
            stored = await page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
            assert "token" not in stored.lower() and "eyJ" not in stored
            await page.evaluate("window.__sameDocument = true")
            assert await page.locator("#notifications li").count() == 0

            customer = await stack.register_customer("ada@example.org")
            order_id = await place_order(customer, product_id)

            card = page.locator("#notifications li", has_text="New case: Employment contract review")
            await card.wait_for(timeout=60_000)
            assert order_id[:8] in (await card.inner_text())
            assert await page.evaluate("window.__sameDocument === true")  # no reload happened
            assert await page.inner_text("#unread") == "1"
            # The alert opens its case in case-handling's staff console.
            case_id = await card.get_attribute("data-case")
            link = card.get_by_role("link", name="Open case")
            assert await link.get_attribute("href") == f"{stack.cases.api.url}/console/cases/{case_id}"
            await assert_accessible(page)
            await screenshot(page, "staff-alerts")
            await assert_fits_phone(page)
            await page.set_viewport_size({"width": 1280, "height": 800})

            await card.get_by_role("button", name="Mark read").click()
            await until_true(page, "document.getElementById('unread').textContent === '0'")
            assert await card.get_attribute("class") == "read"

            # Chinese: the page's and the kit's texts, <html lang>, kept across a reload.
            await page.select_option("select[data-language-picker]", "zh-CN")
            await until_true(page, "document.documentElement.lang === 'zh-CN'")
            assert await page.text_content("#read-all") == "全部标为已读"
            assert await card.get_by_role("link", name="打开案件").count() == 1
            await page.reload()
            await until_ready(page)
            await until_true(page, "document.getElementById('status').textContent === '实时'")
            await assert_accessible(page)
            await assert_fits_phone(page)
            assert problems == []

        # The app's read is the API's read.
        staff = stack.client(alerts, await stack.login("sam@casebridge.example"))
        listed = (await staff.get("/notifications")).json()
        assert listed["unread"] == 0 and listed["items"][0]["read_at"] is not None
