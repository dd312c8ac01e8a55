"""The API docs pages still work under their Content-Security-Policy (issue 25), in headless
Chromium: the viewer's script from its CDN and the page's inline script (allowed by hash) run,
an injected inline script would not. The CDN is stood in for (no network in tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import Route, async_playwright

from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer
from casebridge_shared.web import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Stands in for swagger-ui-bundle.js: the page's inline script calls it with the spec URL.
FAKE_SWAGGER = """
window.SwaggerUIBundle = function (options) {
  fetch(options.url).then(r => r.json()).then(spec => {
    document.getElementById("swagger-ui").textContent = "rendered " + spec.info.title;
  });
};
window.SwaggerUIBundle.presets = {apis: {}};
window.SwaggerUIStandalonePreset = {};
"""


@pytest.mark.slow
async def test_swagger_ui_runs_under_its_policy() -> None:
    assert Path(CHROMIUM).exists(), "make test installs Debian's chromium; run it through make"
    app = create_app(
        service="docs-test",
        title="Docs test",
        description="",
        version="1",
        lifespan=None,
        max_body_bytes=1024,
    )
    server = ApiServer(lambda: app, free_port())
    await server.start()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                violations: list[str] = []
                page.on(
                    "console",
                    lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
                )

                async def cdn(route: Route) -> None:
                    if route.request.url.endswith(".js"):
                        await route.fulfill(body=FAKE_SWAGGER, content_type="text/javascript")
                    else:
                        await route.fulfill(body="", content_type="text/css")

                await page.route("https://cdn.jsdelivr.net/**", cdn)
                await page.route("https://fastapi.tiangolo.com/**", lambda r: r.fulfill(body=b"", status=404))
                await page.goto(f"{server.url}/docs")
                await page.wait_for_selector("#swagger-ui:has-text('rendered Docs test')", timeout=30_000)
                assert violations == []
                # An inline script that is not the page's own is blocked.
                await page.evaluate(
                    "() => { const s = document.createElement('script');"
                    " s.textContent = 'window.__injected = true'; document.body.appendChild(s); }"
                )
                assert await page.evaluate("window.__injected === undefined")
                assert any("Content Security Policy" in v for v in violations)
            finally:
                await browser.close()
    finally:
        await server.stop()
