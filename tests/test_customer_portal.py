"""The customer portal (order-intake /portal/) in headless Chromium, on the embedded stack
(issue 26 sections 1, 4 and 5): the customer registers, orders a product with two files (a
double click orders once), writes a message, watches progress arrive live while staff work the
case through case-handling's API, reads the solution and downloads the document with the same
SHA-256. Once in English and once in Simplified Chinese; axe-core finds nothing serious on each
main page, and each works at phone width (390x844) without horizontal scrolling."""

from __future__ import annotations

import hashlib
import re
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from playwright.async_api import Browser, Page

import order_intake.main
from casebridge_shared.broker import free_port
from casebridge_shared.devmail import MailFolder
from casebridge_shared.testing import ApiServer as Api
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
from order_intake.db import MIGRATIONS as INTAKE_MIGRATIONS
from order_intake.settings import Settings as IntakeSettings

from .conftest import ADMIN, PASSWORD, Stack
from .test_order_to_case import PDF, case_of

# What the page says, per language (the test reads the screen as the customer does).
TEXT: dict[str, dict[str, str]] = {
    "en": {
        "catalog": "Legal services",
        "order": "Order this service",
        "orders": "My orders",
        "send": "Send message",
        "assigned": "Expert assigned",
        "solution_ready": "Solution ready",
        "read_solution": "Read the full solution",
        "in_progress": "In progress",
        "sign_out": "Sign out",
    },
    "zh-CN": {
        "catalog": "法律服务",
        "order": "订购此服务",
        "orders": "我的订单",
        "send": "发送留言",
        "assigned": "已指派专业人员",
        "solution_ready": "解决方案已就绪",
        "read_solution": "阅读完整解决方案",
        "in_progress": "处理中",
        "sign_out": "退出登录",
    },
}
NOTE = b"Employment contract, signed 2024.\n"


async def fits_a_phone(browser: Browser, url: str, cookies: list[Any], lang: str) -> Page:
    """The page at 390x844, signed in with the same cookies, in a browser set to ``lang``:
    no horizontal scrolling."""
    page, problems = await new_page(browser, phone=True, locale=lang)
    await page.context.add_cookies(cookies)
    await page.goto(url)
    await until_ready(page)
    await page.wait_for_selector("main h1")
    await assert_fits_phone(page)
    assert problems == []
    return page


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_customer_journey_in_the_portal(stack: Stack, tmp_path: Path, lang: str) -> None:
    text = TEXT[lang]
    email = f"ada-{lang.lower()}@example.org"
    product_id = await stack.product()
    staff = stack.client(stack.cases, await stack.staff("sam@casebridge.example"))
    portal = f"{stack.intake.api.url}/portal/"

    # English pages keep the plain names in docs/screenshots; the Chinese ones say so.
    suffix = "" if lang == "en" else f"-{lang}"
    async with chromium() as browser:
        page, problems = await new_page(browser, accept_downloads=True)
        context = page.context
        await page.goto(portal)
        await until_ready(page)
        # Signed out, the start page is the catalog; the language is chosen and remembered.
        if lang != "en":
            await page.select_option("select[data-language-picker]", lang)
            await until_true(page, f"document.documentElement.lang === '{lang}'")
        await page.wait_for_selector(f"main h1:has-text('{text['catalog']}')")
        await assert_accessible(page)
        await screenshot(page, f"portal-catalog{suffix}")
        # The price in the customer's locale (EUR 149.00 stored as a decimal string).
        price = await page.inner_text(".product .price")
        assert "149.00" in price and "€" in price, price

        # Ordering needs an account: the page sends the customer to register, then back.
        await page.click(f".product a:has-text('{text['order']}')")
        await page.wait_for_selector("#sign-in-form")
        await page.click("main a[href^='/portal/register']")
        form = page.locator("#register-form")
        await form.wait_for()
        await assert_accessible(page)
        await screenshot(page, f"portal-register{suffix}")
        # A bad password: the server's problem is shown next to the field.
        await page.fill("#register-name", "Ada Lovelace")
        await page.fill("#register-email", email)
        await page.fill("#register-password", "short")
        await page.click("#register-form button[type=submit]")
        await page.wait_for_selector("#register-form .field-error")
        assert await page.get_attribute("#register-password", "aria-invalid") == "true"
        await page.fill("#register-password", PASSWORD)
        await page.click("#register-form button[type=submit]")
        await page.wait_for_selector("main:not([aria-busy]) #order-form")
        assert page.url.endswith(f"/portal/catalog/{product_id}")  # back where they were going
        await assert_accessible(page)

        # Order with two files; a double click on "Place order" orders once.
        await page.fill("#order-description", "Is my non-compete clause valid?")
        # One file chosen, one dropped on the drop zone.
        await page.set_input_files(
            "#order-files", [{"name": "contract.pdf", "mimeType": "application/pdf", "buffer": PDF}]
        )
        await page.evaluate(
            """(text) => {
                const files = new DataTransfer();
                files.items.add(new File([text], "notes.txt", { type: "text/plain" }));
                const zone = document.querySelector("#order-form [data-slot=dropzone]");
                const drop = { dataTransfer: files, bubbles: true, cancelable: true };
                zone.dispatchEvent(new DragEvent("drop", drop));
            }""",
            NOTE.decode(),
        )
        rows = page.locator("#order-form .file-row")
        assert await rows.count() == 2
        # A file the server would refuse is flagged on its own row before anything is sent.
        await page.set_input_files(
            "#order-files", [{"name": "run.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ"}]
        )
        assert await rows.count() == 3
        assert (await rows.nth(2).locator(".file-error").inner_text()).strip() != ""
        await rows.nth(2).get_by_role("button").click()
        assert await rows.count() == 2
        await screenshot(page, f"portal-order-form{suffix}")
        await page.dblclick("#order-form button[type=submit]")
        await page.wait_for_url("**/portal/orders/*")
        order_id = page.url.split("/portal/orders/")[1].split("?")[0]
        await page.wait_for_selector("main:not([aria-busy]) h1:has-text('Employment contract review')")

        customer = stack.client(stack.intake, await stack.login(email))
        listed = (await customer.get("/orders")).json()
        assert listed["total"] == 1 and listed["items"][0]["id"] == order_id
        files = (await customer.get(f"/orders/{order_id}/files")).json()["items"]
        assert sorted(f["file_name"] for f in files) == ["contract.pdf", "notes.txt"]
        assert {f["sha256"] for f in files} == {
            hashlib.sha256(PDF).hexdigest(),
            hashlib.sha256(NOTE).hexdigest(),
        }
        await page.wait_for_selector("[data-slot=files] li:has-text('notes.txt')")

        # A message to the team.
        await page.fill("#message-body", "I can send the old contract too.")
        await page.click(f"#message-form button:has-text('{text['send']}')")
        await page.wait_for_selector(".messages .mine:has-text('I can send the old contract too.')")
        await assert_accessible(page)

        # Staff work the case through case-handling's API; the page follows without a reload.
        await page.evaluate("window.__sameDocument = true")
        case = await case_of(staff, order_id)
        case_id = case["id"]
        assert (await staff.post(f"/cases/{case_id}/claim")).status_code == 200
        await page.wait_for_selector(f".timeline li:has-text('{text['assigned']}')", timeout=60_000)
        await page.wait_for_selector(f"[data-slot=status]:has-text('{text['in_progress']}')")
        assert (await staff.post(f"/cases/{case_id}/start")).status_code == 200
        # The customer's message reached the case; the reply comes back into the thread.
        await _reply(staff, case_id, "Yes please, upload it here.")
        await page.wait_for_selector(
            ".messages .theirs:has-text('Yes please, upload it here.')", timeout=60_000
        )
        r = await staff.post(
            f"/cases/{case_id}/attachments",
            files={"file": ("review.pdf", PDF, "application/pdf")},
            data={"visibility": "customer"},
        )
        assert r.status_code == 201, r.text
        attachment_id = r.json()["id"]
        r = await staff.post(
            f"/cases/{case_id}/solution",
            json={"summary": "Your non-compete clause is void", "text": "It lacks compensation."},
        )
        assert r.status_code == 200, r.text
        await page.wait_for_selector(f".timeline li:has-text('{text['solution_ready']}')", timeout=60_000)
        await page.wait_for_selector("[data-slot=solution]:has-text('Your non-compete clause is void')")
        link = page.locator("[data-slot=documents] a:has-text('review.pdf')")
        await link.wait_for(timeout=60_000)
        assert await page.evaluate("window.__sameDocument === true")  # no reload happened
        await assert_accessible(page)
        await screenshot(page, f"portal-order{suffix}")

        # Reading the solution and downloading the document send read receipts.
        await page.click(f"summary:has-text('{text['read_solution']}')")
        await page.wait_for_selector("[data-slot=solution-text]:has-text('It lacks compensation.')")
        async with page.expect_download() as waiting:
            await link.click()
        download = await waiting.value
        saved = tmp_path / "review.pdf"
        await download.save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(PDF).hexdigest()
        await _receipts_reach_the_case(staff, case_id, attachment_id)

        # My orders, with the status filter.
        await page.click(f"nav a:has-text('{text['orders']}')")
        await page.wait_for_selector(f"tbody a[href='/portal/orders/{order_id}']")
        await page.select_option("#orders-status", "cancelled")
        await page.wait_for_selector("[data-slot=empty]:not([hidden])")
        await page.select_option("#orders-status", "solution_proposed")
        await page.wait_for_selector(f"tbody a[href='/portal/orders/{order_id}']")
        await assert_accessible(page)
        await screenshot(page, f"portal-orders{suffix}")

        # Profile: change the name; the page shows it saved.
        await page.click("nav a[href='/portal/profile']")
        await page.wait_for_selector("main:not([aria-busy]) #profile-form")  # its data is in
        assert await page.input_value("#profile-name") == "Ada Lovelace"
        await page.fill("#profile-name", "Ada King")
        await page.click("#profile-form button[type=submit]")
        await page.wait_for_selector("#profile-form [data-slot=saved]:not([hidden])")
        assert (await customer.get("/me")).json()["full_name"] == "Ada King"
        await assert_accessible(page)
        await screenshot(page, f"portal-profile{suffix}")

        cookies = await context.cookies()
        for name, path in (
            ("catalog", "catalog"),
            ("order", f"orders/{order_id}"),
            ("orders", "orders"),
            ("profile", "profile"),
        ):
            phone = await fits_a_phone(browser, portal + path, cookies, lang)
            if lang == "en":  # one set of phone pictures is enough for the docs
                await screenshot(phone, f"portal-{name}-phone")
            await phone.context.close()

        # Sign out, and in again: the order page opens from its link (as from an email).
        await page.click(f"#sign-out:has-text('{text['sign_out']}')")
        await page.wait_for_selector("#sign-in-form")
        await page.goto(f"{portal}orders/{order_id}")
        await page.wait_for_selector("#sign-in-form")
        await assert_accessible(page)
        await screenshot(page, f"portal-sign-in{suffix}")
        await page.fill("#sign-in-email", email)
        await page.fill("#sign-in-password", PASSWORD)
        await page.click("#sign-in-form button[type=submit]")
        await page.wait_for_url(f"**/portal/orders/{order_id}")
        await page.wait_for_selector("[data-slot=solution]:not([hidden])")
        assert problems == []


async def _reply(staff: httpx.AsyncClient, case_id: str, body: str) -> None:
    r = await staff.post(f"/cases/{case_id}/messages", json={"body": body})
    assert r.status_code in (200, 201), r.text


async def _receipts_reach_the_case(staff: httpx.AsyncClient, case_id: str, attachment_id: str) -> None:
    """The case shows that the customer opened the solution and the document (issue 26)."""

    async def shown() -> bool:
        receipts = (await staff.get(f"/cases/{case_id}")).json()["receipts"]
        return receipts["solution_read_at"] is not None and [
            d["attachment_id"] for d in receipts["documents"]
        ] == [attachment_id]

    await wait_until(shown, timeout=60, message="the case shows the solution and the document as read")


@pytest.mark.slow
async def test_forgotten_password_new_password_and_cancelling_a_submitted_order(
    db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    """order-intake alone (case-handling is not needed to cancel while submitted, nor to reset a
    password): the emailed link opens the portal's reset page and works once; the order page
    cancels the order and shows a lost connection until it is back; the profile changes
    the password, a wrong current one shown on the form."""
    mail = tmp_path / "mail"
    smtp_port = free_port()
    controller = Controller(MailFolder(mail), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    url = await db_templates.fresh("order-intake", INTAKE_MIGRATIONS, tmp_path)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    settings = IntakeSettings(
        environment="test",
        database_url=url,
        var_dir=tmp_path / "var",
        port=port,
        kafka_bootstrap_servers="127.0.0.1:9",  # no broker needed: the outbox keeps the events
        token_issuer=origin,
        portal_url=origin,
        smtp_port=smtp_port,
        log_json=False,
        worker_metrics_port=0,
    )
    api = Api(lambda: order_intake.main.create_application(settings), port)
    await api.start()
    try:
        async with httpx.AsyncClient(base_url=origin, timeout=30) as c:
            r = await c.post(
                "/auth/register",
                json={"email": "rosa@example.org", "password": PASSWORD, "full_name": "Rosa Reset"},
            )
            assert r.status_code == 201, r.text
            admin = (await c.post("/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]})).json()
            r = await c.post(
                "/products",
                headers={"Authorization": f"Bearer {admin['access_token']}"},
                json={
                    "title": "Tenancy check",
                    "description": "We check your lease.",
                    "deliverables": ["Written answer"],
                    "category": "tenancy",
                    "price": "80.00",
                    "currency": "EUR",
                },
            )
            assert r.status_code == 201, r.text
            product_id = r.json()["id"]

        async with chromium() as browser:
            page, problems = await new_page(browser)
            await page.goto(f"{origin}/portal/sign-in")
            await until_ready(page)
            await page.click("a[href='/portal/reset-password']")
            await page.fill("#forgot-email", "rosa@example.org")
            await page.click("#forgot-form button[type=submit]")
            await page.wait_for_selector("main [data-slot=notice]:not([hidden])")
            await assert_accessible(page)

            await wait_until(lambda: any(mail.glob("*.eml")), timeout=60, message="the reset mail")
            message = message_from_bytes(next(mail.glob("*.eml")).read_bytes(), policy=default)
            text_part = message.get_body(preferencelist=("plain",))
            assert text_part is not None
            body = text_part.get_content()
            link = re.search(rf"{re.escape(origin)}/portal/reset-password\?token=[A-Za-z0-9_-]+", body)
            assert link, body
            await page.goto(link.group(0))
            await until_ready(page)
            await page.fill("#reset-password", "a-whole-new-passphrase")
            await page.click("#reset-form button[type=submit]")
            await page.wait_for_selector("main [data-slot=notice]:not([hidden])")
            await assert_accessible(page)
            # The link works once: a second use is refused, on the page.
            await page.goto(link.group(0))
            await until_ready(page)
            await page.fill("#reset-password", "yet-another-passphrase")
            await page.click("#reset-form button[type=submit]")
            await page.wait_for_selector("#reset-form [role=alert]:not(:empty)")

            await page.goto(f"{origin}/portal/sign-in")
            await page.wait_for_selector("#sign-in-form")
            await page.fill("#sign-in-email", "rosa@example.org")
            await page.fill("#sign-in-password", "a-whole-new-passphrase")
            await page.click("#sign-in-form button[type=submit]")
            await page.wait_for_selector("main h1:has-text('My orders')")

            # Order (case-handling is not running: it stays submitted) and cancel it.
            await page.goto(f"{origin}/portal/catalog/{product_id}")
            await page.wait_for_selector("main:not([aria-busy]) #order-form")
            await page.fill("#order-description", "Is the rent increase legal?")
            await page.click("#order-form button[type=submit]")
            await page.wait_for_url("**/portal/orders/*")
            await page.wait_for_selector("[data-slot=cancel]:not([hidden])")
            await page.fill("#cancel-reason", "Solved it with the landlord")
            await page.click("#cancel-form button[type=submit]")
            await page.wait_for_selector("[data-slot=status]:has-text('Cancelled')")
            await page.wait_for_selector(".timeline li:has-text('Order cancelled')")
            assert await page.is_hidden("[data-slot=cancel]")

            # The network goes away: the page says the connection is lost, retries, and says
            # nothing more once it is back. (The browser goes offline: stopping the api would
            # wait on the page's endless live stream.)
            await page.context.set_offline(True)
            await page.wait_for_selector(".kit-connection:not([hidden])", timeout=60_000)
            await page.context.set_offline(False)
            await page.wait_for_selector(".kit-connection", state="hidden", timeout=60_000)

            # Change the password on the profile: a wrong current one is refused on the form.
            await page.goto(f"{origin}/portal/profile")
            await page.wait_for_selector("main:not([aria-busy]) #password-form")
            await page.fill("#profile-current-password", "not-my-password-at-all")
            await page.fill("#profile-new-password", "the-third-passphrase")
            await page.click("#password-form button[type=submit]")
            await page.wait_for_selector("#password-form [role=alert]:not(:empty)")
            await page.fill("#profile-current-password", "a-whole-new-passphrase")
            await page.click("#password-form button[type=submit]")
            await page.wait_for_selector("#sign-in-form")
            await page.wait_for_selector("main [data-slot=notice]:not([hidden])")
            assert problems == []
        async with httpx.AsyncClient(base_url=origin, timeout=30) as c:
            r = await c.post(
                "/auth/token", data={"username": "rosa@example.org", "password": "the-third-passphrase"}
            )
            assert r.status_code == 200, r.text
    finally:
        await api.stop()
        controller.stop()
        await db_templates.drop(url)
