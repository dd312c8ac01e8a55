"""Browser tests for the screens (issue 26): headless Chromium, accessibility and phone checks.

Import Playwright lazily (only browser tests need it)::

    from casebridge_shared.testing.browser import (
        assert_accessible, assert_fits_phone, chromium, new_page, screenshot, until_true,
    )

    async with chromium() as browser:
        page, problems = await new_page(browser)
        await page.goto(url)
        await assert_accessible(page)       # axe-core: no serious or critical violation
        await assert_fits_phone(page)       # 390x844, no horizontal scroll
        assert problems == []               # no script error, nothing blocked by the CSP

or take the ``chromium_browser`` fixture (import it into a conftest or test module).

axe-core (MPL-2.0) is vendored under ``tests/assets/axe-core/`` with its licence: a test-only
file, not part of any production package. It is run with ``page.evaluate``, which the page's
Content-Security-Policy does not govern, so the page under test keeps its real policy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from casebridge_shared.testing import wait_until

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, ViewportSize

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
SCREENSHOTS_ENV = "CASEBRIDGE_SCREENSHOTS"
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


def repo_root() -> Path:
    """The checkout this package runs from (editable install), else the working directory's."""
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "tests" / "assets" / "axe-core" / "axe.min.js").is_file():
                return folder
    raise FileNotFoundError("tests/assets/axe-core/axe.min.js not found above this package or the cwd")


def axe_source() -> str:
    return (repo_root() / "tests" / "assets" / "axe-core" / "axe.min.js").read_text(encoding="utf-8")


def _installed(path: str) -> bool:
    return Path(path).exists()


@asynccontextmanager
async def chromium(**launch: Any) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless (``make browser`` installs it when missing)."""
    from playwright.async_api import async_playwright

    assert _installed(CHROMIUM), "the browser tests need Debian's chromium: run `make browser`"
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", *launch.pop("args", [])], **launch
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def chromium_browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


async def new_page(
    browser: Browser, *, phone: bool = False, locale: str = "en-US", **context: Any
) -> tuple[Page, list[str]]:
    """A page in a new context (own cookies, empty cache) and the list its problems go to:
    uncaught script errors and anything the Content-Security-Policy blocked."""
    ctx = await browser.new_context(
        viewport=PHONE if phone else DESKTOP, locale=locale, service_workers="allow", **context
    )
    page = await ctx.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return page, problems


async def until_true(page: Page, expression: str, *, timeout: float = 30) -> None:
    """Wait until ``expression`` is truthy in the page. (``page.wait_for_function`` uses eval,
    which our page CSP forbids; ``evaluate`` is not subject to it.)"""

    async def holds() -> bool:
        return bool(await page.evaluate(expression))

    await wait_until(holds, timeout=timeout, message=expression)


async def until_ready(page: Page, *, timeout: float = 30) -> None:
    """Wait for the kit's readiness marker (``markReady()``: ``<html data-ready="1">``)."""
    await until_true(page, "document.documentElement.dataset.ready === '1'", timeout=timeout)


async def axe_violations(page: Page, *, include: str | None = None) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (all impacts)."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(axe_source())
    script = """async (include) => {
        const result = await axe.run(include ? document.querySelector(include) : document,
                                     {resultTypes: ['violations']});
        return result.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')),
        }));
    }"""
    violations: list[dict[str, Any]] = await page.evaluate(script, include)
    return violations


async def assert_accessible(page: Page, *, include: str | None = None) -> None:
    """No serious or critical axe-core violation (WCAG 2 A/AA rules and best practices)."""
    blocking = [v for v in await axe_violations(page, include=include) if v["impact"] in BLOCKING_IMPACTS]
    assert not blocking, "accessibility violations:\n" + "\n".join(
        f"- {v['impact']} {v['id']}: {v['help']} at {v['nodes']}" for v in blocking
    )


async def assert_fits_phone(page: Page) -> None:
    """The page at 390x844 needs no horizontal scrolling."""
    await page.set_viewport_size(PHONE)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide on a 390px phone (horizontal scroll)"


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path | None:
    """With ``CASEBRIDGE_SCREENSHOTS=1``: saves ``docs/screenshots/<name>.png`` (else nothing)."""
    if os.environ.get(SCREENSHOTS_ENV) != "1":
        return None
    target = repo_root() / "docs" / "screenshots" / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(target), full_page=full_page)
    return target
