"""The shared web layer's security headers and forwarded-header handling (issue 25)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from casebridge_shared import testing
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.web import create_app


def _app(trusted_proxies: list[str] | None = None) -> FastAPI:
    app = create_app(
        service="test",
        title="Test",
        description="",
        version="1",
        lifespan=None,
        max_body_bytes=1024,
        trusted_proxies=trusted_proxies or [],
    )

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        return {"client": request.client.host if request.client else None, "scheme": request.url.scheme}

    @app.get("/bug")
    async def bug() -> None:
        raise ValueError("unhandled")

    @app.get("/page", response_class=HTMLResponse)
    async def page() -> str:
        return "<!doctype html><p>hi</p>"

    @app.get("/own", response_class=HTMLResponse)
    async def own() -> HTMLResponse:
        return HTMLResponse("<p>x</p>", headers={"Content-Security-Policy": "default-src 'none'"})

    return app


async def _get(app: FastAPI, path: str, peer: str = "203.0.113.7", **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


async def test_answers_pages_and_problems_carry_the_headers() -> None:
    app = _app()
    testing.assert_security_headers(await _get(app, "/whoami"))
    testing.assert_security_headers(await _get(app, "/missing"))
    crashed = await _get(app, "/bug")
    assert crashed.status_code == 500
    testing.assert_security_headers(crashed)
    too_large = await _get(app, "/whoami", **{"content-length": "5000"})
    assert too_large.status_code == 413
    testing.assert_security_headers(too_large)
    page = await _get(app, "/page")
    testing.assert_security_headers(page, page=True)
    assert "script-src 'self';" in page.headers["content-security-policy"]
    # A route's own policy is kept.
    assert (await _get(app, "/own")).headers["content-security-policy"] == "default-src 'none'"


async def test_the_docs_pages_run_no_inline_script_and_load_only_local_files() -> None:
    """Issue 26: Swagger UI and ReDoc from /docs-assets/ (no CDN), scripts from 'self' only."""
    app = _app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://casebridge.test") as client:
        await testing.assert_docs_pages_offline(client)
        for path in testing.DOCS_PAGES:
            assert "<script>" not in (await client.get(path)).text, path


async def test_forwarded_headers_count_only_from_trusted_proxies() -> None:
    spoofed = {"x-forwarded-for": "198.51.100.1", "x-forwarded-proto": "https"}
    # Default: no trusted proxies; the peer is the client, whatever it claims.
    assert (await _get(_app(), "/whoami", **spoofed)).json() == {"client": "203.0.113.7", "scheme": "http"}
    assert (await _get(_app(), "/whoami", peer="127.0.0.1", **spoofed)).json()["client"] == "127.0.0.1"
    proxied = _app(["10.0.0.0/8"])
    # From the proxy: the nearest address that is not a proxy of ours.
    chain = {"x-forwarded-for": "198.51.100.1, 192.0.2.9, 10.1.1.1", "x-forwarded-proto": "https"}
    assert (await _get(proxied, "/whoami", peer="10.0.0.2", **chain)).json() == {
        "client": "192.0.2.9",
        "scheme": "https",
    }
    # Not from the proxy: ignored.
    assert (await _get(proxied, "/whoami", **chain)).json() == {"client": "203.0.113.7", "scheme": "http"}
    # Garbage from the proxy: the proxy's own address stays.
    assert (await _get(proxied, "/whoami", peer="10.0.0.2", **{"x-forwarded-for": "nonsense"})).json()[
        "client"
    ] == "10.0.0.2"


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert ServiceSettings(trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies == ["10.0.0.0/8", "::1"]
    with pytest.raises(ValueError, match="trusted_proxies"):
        ServiceSettings(trusted_proxies=["proxy.internal"])
