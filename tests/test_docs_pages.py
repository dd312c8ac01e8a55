"""The API docs pages work offline (issue 26) under their Content-Security-Policy (issue 25), in
headless Chromium: Swagger UI and ReDoc come from the service itself (/docs-assets/), every
request that would leave loopback is aborted and recorded, and the pages still render the
API's operations; an injected inline script does not run."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from playwright.async_api import ConsoleMessage, Page, Request, Route, async_playwright

from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer
from casebridge_shared.web import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SUMMARY = "List the widgets on the shelf"


def _app() -> FastAPI:
    app = create_app(
        service="docs-test",
        title="Docs test",
        description="",
        version="1",
        lifespan=None,
        max_body_bytes=1024,
    )

    @app.get("/widgets", summary=SUMMARY)
    async def widgets() -> list[str]:
        return []

    return app


class Offline:
    """A page whose every request off loopback is aborted (and remembered), with the page's
    Content-Security-Policy violations and errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.left_loopback: list[str] = []
        self.requested: list[str] = []
        self.violations: list[str] = []
        self.errors: list[str] = []

    async def start(self) -> None:
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._console)
        await self.page.route("**/*", self._route)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)

    async def _route(self, route: Route) -> None:
        if _off_loopback(route.request):
            self.left_loopback.append(route.request.url)
            await route.abort("internetdisconnected")
        else:
            await route.continue_()

    def off_loopback(self) -> list[str]:
        """Everything that tried to leave: aborted by the route, or seen by the request
        listener (which also sees what the route does not, e.g. workers' requests)."""
        seen = [url for url in self.requested if _url_off_loopback(url)]
        return self.left_loopback + seen


def _url_off_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return False
    return parts.hostname not in LOOPBACK


def _off_loopback(request: Request) -> bool:
    return _url_off_loopback(request.url)


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    assert Path(CHROMIUM).exists(), "make test installs Debian's chromium; run it through make"
    app = _app()
    api = ApiServer(lambda: app, free_port())
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.mark.slow
async def test_swagger_ui_and_redoc_render_with_no_network_beyond_loopback(server: ApiServer) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            offline = Offline(page)
            await offline.start()

            await page.goto(f"{server.url}/docs")
            operation = page.locator(".opblock-summary", has_text=SUMMARY)
            await operation.wait_for(timeout=60_000)
            assert "/widgets" in await operation.inner_text()
            assert offline.violations == [] and offline.errors == []

            # An inline script that is not the page's own is blocked (scripts from 'self' only).
            await page.evaluate(
                "() => { const s = document.createElement('script');"
                " s.textContent = 'window.__injected = true'; document.body.appendChild(s); }"
            )
            assert await page.evaluate("window.__injected === undefined")
            assert any("Content Security Policy" in v for v in offline.violations)
            offline.violations.clear()

            await page.goto(f"{server.url}/redoc")
            # ReDoc shows the summary in its menu and as the operation's heading.
            await page.locator("h2", has_text=SUMMARY).wait_for(timeout=60_000)
            await page.locator("[role=menuitem], li", has_text=SUMMARY).first.wait_for(timeout=30_000)

            assert offline.off_loopback() == []
            assert offline.violations == [] and offline.errors == []
            assert any("/docs-assets/swagger-ui/swagger-ui-bundle.js" in u for u in offline.requested)
            assert any("/docs-assets/redoc/redoc.standalone.js" in u for u in offline.requested)
        finally:
            await browser.close()
