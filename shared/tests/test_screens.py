"""Issue 26: the screen kit at /assets/kit/ and page folders (page_router), in every service."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared.screens import KIT_DIR, page_router
from casebridge_shared.web import create_app

PROBLEM = "application/problem+json"


def _app(page: Path | None = None) -> FastAPI:
    app = create_app(
        service="notifier",
        title="Test",
        description="",
        version="1",
        lifespan=None,
        max_body_bytes=1024,
    )
    if page is not None:
        app.include_router(page_router("/console", page, connect_src=["http://127.0.0.1:8001"]))
    return app


async def _get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


@pytest.fixture
def page(tmp_path: Path) -> Path:
    folder = tmp_path / "console"
    (folder / "i18n").mkdir(parents=True)
    (folder / "index.html").write_text("<!doctype html><title>Console</title>" + "<p>x</p>" * 200)
    (folder / "console.js").write_text("export const x = 1;\n")
    (folder / "i18n" / "en.json").write_text('{"title": "Console"}')
    (folder / ".secret").write_text("no")
    (tmp_path / "outside.js").write_text("no")
    return folder


async def test_every_service_serves_the_kit_with_its_name() -> None:
    app = _app()
    kit = await _get(app, "/assets/kit/kit.js")
    assert kit.status_code == 200
    assert kit.headers["content-type"].startswith("text/javascript")
    assert kit.text == (KIT_DIR / "kit.js").read_text()
    assert "'unsafe-inline'" not in kit.headers["content-security-policy"]
    for name in ("api", "signIn", "signOut", "currentUser", "showProblem", "clearProblems", "initI18n"):
        assert f"export async function {name}(" in kit.text or f"export function {name}(" in kit.text, name
    for name in ("t", "setLanguage", "language", "formatMoney", "formatDate", "formatDateTime", "live"):
        assert f"export function {name}(" in kit.text or f"export async function {name}(" in kit.text, name
    service = await _get(app, "/assets/kit/service.js")
    assert service.text == 'export const SERVICE = "notifier";\n'
    css = await _get(app, "/assets/kit/kit.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    en = (await _get(app, "/assets/kit/i18n/en.json")).json()
    zh = (await _get(app, "/assets/kit/i18n/zh-CN.json")).json()
    assert (
        set(en) == set(zh)
        and en["kit.connection_lost"]
        and zh["kit.connection_lost"] != en["kit.connection_lost"]
    )


async def test_kit_files_are_gzipped_and_revalidated_by_etag() -> None:
    app = _app()
    plain = await _get(app, "/assets/kit/kit.js", **{"accept-encoding": "identity"})
    zipped = await _get(app, "/assets/kit/kit.js", **{"accept-encoding": "gzip, br"})
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["vary"] == "Accept-Encoding"
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    assert plain.headers["etag"] != zipped.headers["etag"]  # two representations, two validators
    assert plain.headers["cache-control"] == "no-cache"
    again = await _get(app, "/assets/kit/kit.js", **{"if-none-match": zipped.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == zipped.headers["etag"]
    version = plain.headers["etag"].strip('"')
    pinned = await _get(app, f"/assets/kit/kit.js?v={version}")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = await _get(app, "/assets/kit/kit.js?v=0000")
    assert stale.headers["cache-control"] == "no-cache"  # a stale pin is not cached for a year


@pytest.mark.parametrize(
    "path", ["/assets/kit/nope.js", "/assets/kit/../web.py", "/assets/kit/%2e%2e/web.py"]
)
async def test_unknown_kit_files_are_404_problems(path: str) -> None:
    response = await _get(_app(), path)
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM


async def test_a_page_folder_serves_its_files_and_client_side_routes(page: Path) -> None:
    app = _app(page)
    root = await _get(app, "/console")
    assert root.status_code == 308 and root.headers["location"] == "/console/"
    index = await _get(app, "/console/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    csp = index.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "connect-src 'self' http://127.0.0.1:8001" in csp
    assert "frame-ancestors 'none'" in csp
    # A client-side route of the page is the page.
    route = await _get(app, "/console/cases/0192-abc")
    assert route.status_code == 200 and route.text == index.text
    js = await _get(app, "/console/console.js")
    assert js.headers["content-type"].startswith("text/javascript") and "export const x" in js.text
    assert json.loads((await _get(app, "/console/i18n/en.json")).text) == {"title": "Console"}
    zipped = await _get(app, "/console/", **{"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.text == index.text  # httpx undoes the gzip: the same page


@pytest.mark.parametrize("path", ["/console/missing.js", "/console/.secret", "/console/../outside.js"])
async def test_a_page_folder_serves_nothing_else(page: Path, path: str) -> None:
    response = await _get(_app(page), path)
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
