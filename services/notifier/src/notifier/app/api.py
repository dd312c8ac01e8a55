"""Routes: the reference staff app (a small PWA) at ``/app``: its files and its configuration.

The app signs in at order-intake's token endpoint (which must allow this
origin: ``cors_allow_origins`` on order-intake) and uses this service's API.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel

from casebridge_shared.problems import NotFound
from casebridge_shared.web import page_csp

STATIC = Path(__file__).parent / "static"
FILES = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "sw.js": "text/javascript",
    "manifest.webmanifest": "application/manifest+json",
    "icon.svg": "image/svg+xml",
}

router = APIRouter(prefix="/app", tags=["staff app"], include_in_schema=False)


class AppConfig(BaseModel):
    token_url: str


@router.get("")
async def app_root() -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


def _headers(request: Request) -> dict[str, str]:
    """The page policy for the app's files: the page, and the service worker script (a
    worker runs under the policy its script came with). Besides this origin, the app
    only calls the token endpoint."""
    issuer = urlsplit(request.app.state.container.settings.token_issuer)
    return {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": page_csp(connect_src=[f"{issuer.scheme}://{issuer.netloc}"]),
    }


@router.get("/")
async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_headers(request))


@router.get("/config.json", response_model=AppConfig)
async def app_config(request: Request) -> AppConfig:
    settings = request.app.state.container.settings
    return AppConfig(token_url=f"{settings.token_issuer.rstrip('/')}/auth/token")


@router.get("/{name}")
async def static_file(name: str, request: Request) -> FileResponse:
    if name not in FILES:
        raise NotFound(f"The staff app has no file {name!r}.")
    # The service worker controls everything under /app/ and must be re-checked on each visit.
    return FileResponse(STATIC / name, media_type=FILES[name], headers=_headers(request))
