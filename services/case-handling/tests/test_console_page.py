"""The console's page files as served (issue 26, sections 2 and 4): its own folder, a page policy
without 'unsafe-inline', client-side routes for cases, installable, and 404 problems."""

from __future__ import annotations

import json

import httpx

from .test_cases_api import problem


async def test_the_console_page_and_its_routes(client: httpx.AsyncClient) -> None:
    page = await client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert '<script type="module" src="/console/console.js">' in page.text
    assert '<link rel="manifest" href="/console/manifest.webmanifest">' in page.text
    # A case's address is the same page (the script reads the path): links from alerts work.
    case_page = await client.get("/console/cases/5b0a3c3e-1d7c-4c43-9a49-6a1f1c0e2a11")
    assert case_page.status_code == 200 and case_page.text == page.text
    assert (await client.get("/console", follow_redirects=False)).status_code == 308

    manifest = await client.get("/console/manifest.webmanifest")
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    body = json.loads(manifest.content)
    assert body["start_url"] == "/console/" and body["scope"] == "/console/" and body["icons"]
    worker = await client.get("/console/sw.js")
    assert worker.status_code == 200 and worker.headers["content-type"].startswith("text/javascript")
    for name in ("console.js", "console.css", "icon.svg", "i18n/en.json", "i18n/zh-CN.json"):
        assert (await client.get(f"/console/{name}")).status_code == 200, name
    english = (await client.get("/console/i18n/en.json")).json()
    chinese = (await client.get("/console/i18n/zh-CN.json")).json()
    assert set(english) == set(chinese)  # every text in both languages

    problem(await client.get("/console/nothing.js"), 404)
    problem(await client.get("/console/../main.py"), 404)
