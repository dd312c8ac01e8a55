"""Issue 26: the screen kit in headless Chromium, on a small page served by a real service app.

The app is made by ``create_app`` (so /session, the CSRF check and /assets/kit/ are the real
ones); its issuer is an in-process ``SessionIssuer`` that signs real tokens with a test key, so
the kit is tested without the whole stack (tests/test_staff_app.py runs it against order-intake).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from casebridge_shared.auth import CurrentUser
from casebridge_shared.browser_session import IssuedTokens
from casebridge_shared.problems import Unauthorized
from casebridge_shared.screens import page_router
from casebridge_shared.testing import ApiServer, TokenMinter
from casebridge_shared.testing.browser import (
    assert_accessible,
    assert_fits_phone,
    chromium,
    new_page,
    until_ready,
    until_true,
)
from casebridge_shared.web import create_app

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery"

INDEX = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Kit test</title>
  <link rel="stylesheet" href="/assets/kit/kit.css">
</head>
<body>
  <header class="app-header">
    <h1 data-i18n="title">Kit test</h1>
    <label><span data-i18n="kit.language">Language</span> <select data-language-picker></select></label>
  </header>
  <main>
    <form id="login" class="card narrow" novalidate>
      <h2 data-i18n="kit.sign_in">Sign in</h2>
      <label><span data-i18n="kit.email">Email</span>
        <input name="email" type="email" autocomplete="username"></label>
      <label><span data-i18n="kit.password">Password</span>
        <input name="password" type="password" autocomplete="current-password"></label>
      <button type="submit" data-i18n="kit.sign_in">Sign in</button>
      <p role="alert"></p>
    </form>
    <section id="home" hidden>
      <p id="who"></p>
      <p id="price"></p>
      <button id="poke" type="button">Poke</button>
      <p id="poked"></p>
      <button id="listen" type="button">Listen</button>
      <p id="ticks"></p>
    </section>
  </main>
  <script type="module" src="/kit-test/page.js"></script>
</body>
</html>
"""

PAGE_JS = """
import { api, clearProblems, currentUser, formatMoney, initI18n, live, markReady, showProblem, signIn, t,
         watchConnection } from "/assets/kit/kit.js";

const form = document.getElementById("login");
function show(user) {
  form.hidden = !!user;
  document.getElementById("home").hidden = !user;
  if (user) document.getElementById("who").textContent = t("hello", { name: user.name });
  document.getElementById("price").textContent = formatMoney("1234.5", "EUR");
}
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearProblems(form);
  try {
    show(await signIn(form.elements.email.value, form.elements.password.value));
  } catch (error) {
    showProblem(form, error);
  }
});
document.getElementById("poke").addEventListener("click", async () => {
  try {
    const answer = await api("/poke", { method: "POST", json: { n: 1 } });
    document.getElementById("poked").textContent = `poked by ${answer.by}`;
  } catch (error) {
    document.getElementById("poked").textContent = `failed ${error.status}`;
  }
});
const seen = [];
document.getElementById("listen").addEventListener("click", () => {
  live("/ticks", (event) => {
    seen.push(Number(event.data));
    document.getElementById("ticks").textContent = seen.join(",");
  }, { events: ["tick"], onOpen: () => {
    document.body.dataset.opened = String(Number(document.body.dataset.opened || 0) + 1);
  } });
});
// Remember that the connection banner was shown at some point (it hides again on reconnect).
new MutationObserver(() => {
  const banner = document.querySelector(".kit-connection");
  // Only when it changes: setting the attribute is itself a mutation this observer sees.
  const shown = banner && !banner.hidden;
  if (shown && document.body.dataset.sawBanner !== "1") document.body.dataset.sawBanner = "1";
}).observe(document.body, { subtree: true, childList: true, attributes: true });
window.addEventListener("session-expired", () => (document.body.dataset.expired = "1"));
await initI18n("/kit-test/");
watchConnection();
show(await currentUser());
markReady();
"""


class FixedPasswordIssuer:
    """Signs real tokens for one account: the session routes need an issuer, not a whole order-intake."""

    def __init__(self, minter: TokenMinter) -> None:
        self.minter = minter
        self.refreshes = 0
        self._refresh = "r0"

    def _tokens(self) -> IssuedTokens:
        token = self.minter.token(
            "u-1", "staff", name="Sam Staff", email="sam@example.org", lifetime_seconds=600
        )
        self._refresh = f"r{self.refreshes}"
        return IssuedTokens(token, 600, self._refresh, 3600)

    async def sign_in(self, request: Request, email: str, password: str) -> IssuedTokens:
        if email != "sam@example.org" or password != PASSWORD:
            raise Unauthorized("wrong email or password")
        return self._tokens()

    async def refresh(self, request: Request, refresh_token: str) -> IssuedTokens:
        if refresh_token != self._refresh:
            raise Unauthorized("refresh token refused")
        self.refreshes += 1
        return self._tokens()

    async def sign_out(self, request: Request, refresh_token: str) -> None:
        self._refresh = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[str, FixedPasswordIssuer]]:
    folder = tmp_path / "kit-test"
    (folder / "i18n").mkdir(parents=True)
    (folder / "index.html").write_text(INDEX, encoding="utf-8")
    (folder / "page.js").write_text(PAGE_JS, encoding="utf-8")
    (folder / "i18n" / "en.json").write_text('{"title": "Kit test", "hello": "Hello {name}"}')
    (folder / "i18n" / "zh-CN.json").write_text('{"title": "工具包测试", "hello": "你好 {name}"}')
    minter = TokenMinter()
    issuer = FixedPasswordIssuer(minter)

    def make() -> FastAPI:
        app = create_app(
            service="kit-test", title="Kit", description="", version="1", lifespan=None, max_body_bytes=4096
        )
        app.state.token_verifier = minter.verifier()
        app.state.session_issuer = issuer

        @app.post("/poke")
        async def poke(user: CurrentUser) -> dict[str, Any]:
            return {"by": user.name}

        @app.get("/ticks")
        async def ticks(user: CurrentUser, request: Request) -> StreamingResponse:
            """Three events after Last-Event-ID. The first connection then ends (a dropped
            connection, as far as the page can tell); a resumed one stays open."""
            after = int(request.headers.get("last-event-id") or 0)

            async def body() -> AsyncIterator[str]:
                yield "retry: 200\n\n"
                for n in range(after + 1, after + 4):
                    yield f"id: {n}\nevent: tick\ndata: {n}\n\n"
                if after:
                    await asyncio.Event().wait()  # open until the browser goes

            return StreamingResponse(body(), media_type="text/event-stream")

        app.include_router(page_router("/kit-test", folder))
        return app

    server = ApiServer(make, _free_port())
    await server.start()
    try:
        yield server.url, issuer
    finally:
        await server.stop()


async def test_the_kit_signs_in_shows_problems_refreshes_and_translates(
    site: tuple[str, FixedPasswordIssuer],
) -> None:
    url, issuer = site
    async with chromium() as browser:
        page, problems = await new_page(browser)
        await page.goto(f"{url}/kit-test/")
        await until_ready(page)
        assert await page.is_visible("#login")
        await assert_accessible(page)
        await assert_fits_phone(page)

        # A 422 from /session: the reason sits next to the email field, tied to it for screen readers.
        await page.fill("input[name=email]", "a")
        await page.fill("input[name=password]", "x")
        await page.click("#login button[type=submit]")
        await page.wait_for_selector(".field-error")
        email = page.locator("input[name=email]")
        assert await email.get_attribute("aria-invalid") == "true"
        described = await email.get_attribute("aria-describedby")
        assert described and await page.locator(f"#{described}").is_visible()
        assert await page.text_content("#login [role=alert]")
        await assert_accessible(page)  # the error state is accessible too

        # A wrong password: the problem's detail in the alert, the field notes gone.
        await page.fill("input[name=email]", "sam@example.org")
        await page.fill("input[name=password]", "wrong")
        await page.click("#login button[type=submit]")
        await until_true(page, "document.querySelector('#login [role=alert]').textContent.includes('wrong')")
        assert await page.locator(".field-error").count() == 0

        await page.fill("input[name=password]", PASSWORD)
        await page.click("#login button[type=submit]")
        await page.wait_for_selector("#home:not([hidden])")
        assert await page.is_hidden("#login")
        assert await page.text_content("#who") == "Hello Sam Staff"
        assert await page.text_content("#price") == "€1,234.50"

        # No token where a script can read it: the CSRF cookie only.
        readable = await page.evaluate("document.cookie")
        assert "cb_kit-test_csrf=" in readable and "access" not in readable and "refresh" not in readable
        stored = await page.evaluate(
            "JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage)])"
        )
        assert "token" not in stored.lower()

        # An unsafe call carries X-CSRF-Token (the server refuses it otherwise).
        await page.click("#poke")
        await page.wait_for_selector("#poked:has-text('poked by Sam Staff')")

        # A form's Idempotency-Key: the same for every send until its create succeeds, then a new one.
        keys = await page.evaluate(
            """async () => {
              const kit = await import("/assets/kit/kit.js");
              const form = document.createElement("form");
              const first = kit.formKey(form), again = kit.formKey(form);
              kit.formCreated(form);
              return [first, again, kit.formKey(form)];
            }"""
        )
        assert keys[0] == keys[1] and keys[2] != keys[0] and len(set(keys[0])) > 1

        # The access cookie gone (expired): the kit refreshes once and retries.
        await page.context.clear_cookies(name="cb_kit-test_access")
        await page.evaluate("document.getElementById('poked').textContent = ''")
        await page.click("#poke")
        await page.wait_for_selector("#poked:has-text('poked by Sam Staff')")
        assert issuer.refreshes == 1
        names = {c["name"] for c in await page.context.cookies()}
        assert "cb_kit-test_access" in names

        # Live updates by cookie: the stream drops, the banner shows, the browser reconnects and
        # resumes after the last event (Last-Event-ID), the banner goes.
        await page.click("#listen")
        await until_true(page, "document.getElementById('ticks').textContent === '1,2,3,4,5,6'")
        assert await page.evaluate("document.body.dataset.opened") == "2"
        assert await page.evaluate("document.body.dataset.sawBanner") == "1"
        await page.locator(".kit-connection").wait_for(state="hidden")
        await page.evaluate("document.body.dataset.sawBanner = ''")

        # A call that cannot reach the server: status 0 and the banner, until a call gets through.
        await page.route("**/poke", lambda route: route.abort())
        await page.click("#poke")
        await page.wait_for_selector("#poked:has-text('failed 0')")
        assert await page.is_visible(".kit-connection[role=status]")
        await page.unroute("**/poke")
        await page.click("#poke")
        await page.wait_for_selector("#poked:has-text('poked by Sam Staff')")

        # Chinese, remembered across a reload, and <html lang> follows.
        await page.select_option("select[data-language-picker]", "zh-CN")
        await until_true(page, "document.documentElement.lang === 'zh-CN'")
        assert await page.text_content("h1") == "工具包测试"
        await page.reload()
        await until_ready(page)
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        assert await page.text_content("#who") == "你好 Sam Staff"
        await assert_accessible(page)
        assert problems == []
