"""The staff app's files: its page folder (casebridge_shared.screens.page_router), nothing else under
/app (issues 5 and 26)."""

from __future__ import annotations

import httpx
import pytest

from casebridge_shared import testing


async def test_the_app_shell_and_its_configuration_are_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/app")
    assert r.status_code == 308 and r.headers["location"] == "/app/"
    r = await client.get("/app/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    r = await client.get("/app/config.json")
    # Each alert opens its case in case-handling's staff console (the devstack's address by default).
    assert r.status_code == 200 and r.json() == {"case_console_url": "http://127.0.0.1:8002/console"}
    for name, kind in (
        ("app.js", "javascript"),
        ("sw.js", "javascript"),
        ("manifest.webmanifest", "manifest"),
        ("i18n/en.json", "json"),
        ("i18n/zh-CN.json", "json"),
    ):
        r = await client.get(f"/app/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name


async def test_the_english_and_chinese_texts_have_the_same_keys(client: httpx.AsyncClient) -> None:
    en = (await client.get("/app/i18n/en.json")).json()
    zh = (await client.get("/app/i18n/zh-CN.json")).json()
    assert set(en) == set(zh) and all(zh.values())


@pytest.mark.parametrize("name", ["nope.js", "..%2Fsettings.py", "%2E%2E%2Fapi.py", "index.html.bak"])
async def test_anything_else_under_app_is_a_clean_404(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/app/{name}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_the_app_files_carry_the_page_policy(client: httpx.AsyncClient) -> None:
    """The page and its service worker run under a policy without 'unsafe-inline' that lets them
    call this origin only (sign-in is this service's /session); config.json is an API answer."""
    for path in ("/app/", "/app/app.js", "/app/sw.js", "/app/app.css", "/app/icon.svg"):
        r = await client.get(path)
        testing.assert_security_headers(r, page=True)
        policy = r.headers["content-security-policy"]
        assert "connect-src 'self';" in policy, policy
        assert "script-src 'self';" in policy and "style-src 'self';" in policy
    testing.assert_security_headers(await client.get("/app/config.json"))
