"""The customer portal's page and files (issue 26 section 1): every client-side route answers the
page (so links in emails open the right view), its files by path and nothing else, the page policy
without 'unsafe-inline', and both languages with the same keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from casebridge_shared import testing
from order_intake.portal import api as portal

ROUTES = [
    "/portal/",
    "/portal/sign-in",
    "/portal/register",
    "/portal/reset-password?token=abc",
    "/portal/profile",
    "/portal/catalog",
    "/portal/catalog/0b6f1c3e-8a6f-4f7e-9a51-3c1d2e4f5a6b",
    "/portal/orders",
    "/portal/orders?status=submitted",
    "/portal/orders/0b6f1c3e-8a6f-4f7e-9a51-3c1d2e4f5a6b",
]


async def test_portal_root_redirects_to_the_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/portal")
    assert r.status_code == 308 and r.headers["location"] == "/portal/"


@pytest.mark.parametrize("path", ROUTES)
async def test_each_route_answers_the_page_with_its_policy(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200, path
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"  # revalidated (ETag): a deploy is seen at once
    testing.assert_security_headers(r, page=True)
    policy = r.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert '<script type="module" src="/portal/portal.js">' in r.text


async def test_assets_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    for name, kind in (
        ("portal.js", "text/javascript"),
        ("portal.css", "text/css"),
        ("i18n/en.json", "application/json"),
        ("i18n/zh-CN.json", "application/json"),
    ):
        r = await client.get(f"/portal/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
        testing.assert_security_headers(r, page=True)


@pytest.mark.parametrize(
    "name", ["nope.js", "api.py", "..%2Fapi.py", "%2E%2E%2F__init__.py", "i18n%2F..%2F..%2Fapi.py"]
)
async def test_any_other_file_under_portal_is_a_clean_404(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/portal/{name}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_the_config_tells_the_page_the_upload_limits(client: httpx.AsyncClient) -> None:
    r = await client.get("/portal/config.json")
    assert r.status_code == 200
    body = r.json()
    assert body["max_file_bytes"] > 0 and "application/pdf" in body["allowed_types"]
    assert body["files_per_upload"] >= 2


def test_both_languages_have_the_same_keys_and_real_translations() -> None:
    dictionaries = portal.STATIC / "i18n"
    english = json.loads((dictionaries / "en.json").read_text())
    chinese = json.loads((dictionaries / "zh-CN.json").read_text())
    # Every English key is translated; timeline keys may add the server's detail sentences.
    assert set(english) <= set(chinese)
    untranslated = [k for k, v in english.items() if chinese[k] == v and k != "portal.brand"]
    assert untranslated == []


def test_every_i18n_key_the_page_uses_exists() -> None:
    """The keys named in index.html (data-i18n) and portal.js (t("...")) are in the dictionary."""
    english = json.loads((portal.STATIC / "i18n" / "en.json").read_text())
    html = (portal.STATIC / "index.html").read_text()
    script = (portal.STATIC / "portal.js").read_text()
    used = set(re.findall(r'data-i18n="([^"]+)"', html))
    for attr in re.findall(r'data-i18n-attr="([^"]+)"', html):
        used |= set(re.findall(r":([\w.]+)", attr))
    used |= set(re.findall(r'\bt\("([\w.]+)"', script))
    missing = sorted(k for k in used if k not in english and not k.startswith("timeline."))
    assert missing == [], missing


def test_no_inline_script_or_style_in_the_page() -> None:
    html = Path(portal.STATIC / "index.html").read_text()
    assert "style=" not in html and "<style" not in html
    assert "<script>" not in html and "onclick" not in html.lower()
