"""Routes: the customer portal's page and its files, under ``/portal/``.

The portal is one page (``index.html``) with client-side routes under real paths, so a link
in an email (``/portal/orders/<id>``, ``/portal/reset-password?token=...``) opens the right
view. A file of the page is served by its path (``/portal/portal.js``, ``/portal/i18n/en.json``);
every known route answers the page; any other path without a file extension answers the page
with 404 (it says "not found"), and anything else is a 404 problem.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel

from casebridge_shared.problems import NotFound
from casebridge_shared.web import page_csp

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
# The files the page may load, fixed at start-up: a request names one of these or gets 404,
# so no path from the URL ever reaches the file system.
ASSETS = {
    path.relative_to(STATIC).as_posix(): path
    for path in STATIC.rglob("*")
    if path.is_file() and path.suffix in MEDIA_TYPES
}
# The client-side routes (see ROUTES in portal.js).
PAGE_ROUTES = re.compile(
    r"^(|sign-in|register|reset-password|profile|catalog|catalog/[0-9A-Za-z-]{1,36}|orders"
    r"|orders/[0-9A-Za-z-]{1,36})/?$"
)
# Same limits as staff uploads in case-handling (its attachment_max_bytes and allowed types); the
# server checks again, the page only warns early.
MAX_FILE_BYTES = 20 * 1024 * 1024
ALLOWED_TYPES = (
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/msword",
)

router = APIRouter(prefix="/portal", tags=["customer portal"], include_in_schema=False)


class PortalConfig(BaseModel):
    """What the page needs to know before it talks to the API."""

    max_file_bytes: int
    allowed_types: list[str]


def _headers() -> dict[str, str]:
    # no-cache: the page and its modules are revalidated on each visit, so a deploy is seen at once.
    return {"Cache-Control": "no-cache", "Content-Security-Policy": page_csp()}


def _page(status_code: int = 200) -> FileResponse:
    return FileResponse(
        STATIC / "index.html", status_code=status_code, media_type="text/html", headers=_headers()
    )


@router.get("")
async def portal_root() -> RedirectResponse:
    return RedirectResponse("/portal/", status_code=308)


@router.get("/config.json", response_model=PortalConfig)
async def portal_config(request: Request) -> PortalConfig:
    settings = request.app.state.container.settings
    return PortalConfig(
        max_file_bytes=int(getattr(settings, "customer_file_max_bytes", MAX_FILE_BYTES)),
        allowed_types=list(getattr(settings, "customer_file_allowed_types", ALLOWED_TYPES)),
    )


@router.get("/{name:path}")
async def page_or_file(name: str) -> Response:
    path = ASSETS.get(name)
    if path is not None:
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=_headers())
    if "." in name.rsplit("/", 1)[-1]:
        raise NotFound(f"The customer portal has no file {name!r}.")
    return _page(200 if PAGE_ROUTES.match(name) else 404)
