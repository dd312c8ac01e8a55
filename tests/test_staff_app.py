"""The reference staff app (PWA at /app) in headless Chromium: sign in at order-intake, and a new
order appears on the page without a reload (issue 5, section 3). Everything is really running."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from casebridge_shared.testing import DatabaseTemplates, wait_until

from .conftest import PASSWORD, Stack, notifier_knows, notifier_platform
from .test_order_to_case import place_order

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


async def until_true(page: Page, expression: str) -> None:
    """``page.wait_for_function`` evaluates its predicate with ``eval``, which the page's
    Content-Security-Policy forbids (no 'unsafe-eval'); ``evaluate`` is not subject to it."""

    async def holds() -> bool:
        return bool(await page.evaluate(expression))

    await wait_until(holds, timeout=30, message=expression)


@pytest.mark.slow
async def test_a_new_order_appears_in_the_staff_app_without_a_reload(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    assert Path(CHROMIUM).exists(), "make test installs Debian's chromium; run it through make"
    async with notifier_platform(stack, db_templates, tmp_path) as alerts:
        await stack.staff("sam@casebridge.example", "staff")
        await notifier_knows(alerts, "sam@casebridge.example")
        product_id = await stack.product()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda e: problems.append(str(e)))
                # The page's Content-Security-Policy (issue 25) blocks nothing the app needs.
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
                )
                await page.goto(f"{alerts.api.url}/app/")
                # Installable: a manifest, and a service worker that controls /app/.
                manifest = await page.get_attribute("link[rel=manifest]", "href")
                assert manifest == "/app/manifest.webmanifest"
                await until_true(
                    page, "navigator.serviceWorker.getRegistration('/app/').then(r => !!r && !!r.active)"
                )

                # Sign in: the browser posts to order-intake's token endpoint (CORS).
                await page.fill("#email", "sam@casebridge.example")
                await page.fill("#password", "not the password")
                await page.click("#login button[type=submit]")
                await page.wait_for_selector("#login-error:has-text('Wrong email or password')")
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
                await until_true(page, "document.getElementById('status').textContent === 'live'")
                await page.evaluate("window.__sameDocument = true")
                assert await page.locator("#notifications li").count() == 0

                customer = await stack.register_customer("ada@example.org")
                order_id = await place_order(customer, product_id)

                card = page.locator("#notifications li", has_text="New case: Employment contract review")
                await card.wait_for(timeout=60_000)
                assert order_id[:8] in (await card.inner_text())
                assert await page.evaluate("window.__sameDocument === true")  # no reload happened
                assert await page.inner_text("#unread") == "1"

                await card.get_by_role("button", name="Mark read").click()
                await until_true(page, "document.getElementById('unread').textContent === '0'")
                assert await card.get_attribute("class") == "read"
                assert problems == []
            finally:
                await browser.close()

        # The app's read is the API's read.
        staff = stack.client(alerts, await stack.login("sam@casebridge.example"))
        listed = (await staff.get("/notifications")).json()
        assert listed["unread"] == 0 and listed["items"][0]["read_at"] is not None
