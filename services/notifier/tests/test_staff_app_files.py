"""The staff app's files: served by name from a fixed list, nothing else under /app (issue 5)."""

from __future__ import annotations

import httpx
import pytest


async def test_the_app_shell_and_its_configuration_are_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/app")
    assert r.status_code == 308 and r.headers["location"] == "/app/"
    r = await client.get("/app/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    r = await client.get("/app/config.json")
    assert r.status_code == 200 and r.json()["token_url"].endswith("/auth/token")
    for name, kind in (
        ("app.js", "javascript"),
        ("sw.js", "javascript"),
        ("manifest.webmanifest", "manifest"),
    ):
        r = await client.get(f"/app/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name


@pytest.mark.parametrize("name", ["nope.js", "..%2Fsettings.py", "%2E%2E%2Fapi.py", "index.html.bak"])
async def test_anything_else_under_app_is_a_clean_404(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/app/{name}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
