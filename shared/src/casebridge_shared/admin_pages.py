"""Serving a service's admin pages at ``/admin/`` (order-intake, notifier; issue 26 §3).

A page folder holds ``index.html``, ``admin.js`` and ``i18n/<lang>.json``; the
common ``adminbase.js`` and ``admin.css`` come from this package. Every answer
carries the page policy (no 'unsafe-inline'); only listed files are served.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from casebridge_shared.problems import NotFound
from casebridge_shared.web import page_csp

SHARED = Path(__file__).parent / "admin_assets"
TYPES = {".js": "text/javascript", ".css": "text/css", ".json": "application/json"}
LANGUAGES = ("en", "zh-CN")


def admin_pages_router(
    folder: Path, *, connect_src: Callable[[Request], list[str]] | None = None
) -> APIRouter:
    """``/admin/`` and its files from ``folder``; ``connect_src`` names other origins the page calls
    (the notifier's page signs in at order-intake's token endpoint)."""
    router = APIRouter(prefix="/admin", tags=["admin pages"], include_in_schema=False)

    def headers(request: Request) -> dict[str, str]:
        extra = connect_src(request) if connect_src else []
        return {"Cache-Control": "no-cache", "Content-Security-Policy": page_csp(connect_src=extra)}

    def file(path: Path, request: Request) -> FileResponse:
        return FileResponse(path, media_type=TYPES.get(path.suffix, "text/plain"), headers=headers(request))

    @router.get("")
    async def root() -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=308)

    @router.get("/")
    async def index(request: Request) -> FileResponse:
        return FileResponse(folder / "index.html", media_type="text/html", headers=headers(request))

    @router.get("/i18n/{lang}.json")
    async def dictionary(lang: str, request: Request) -> FileResponse:
        if lang not in LANGUAGES:
            raise NotFound(f"no admin page dictionary for {lang!r}", field="path.lang")
        return file(folder / "i18n" / f"{lang}.json", request)

    @router.get("/{name}")
    async def asset(name: str, request: Request) -> FileResponse:
        if name in {"adminbase.js", "admin.css"}:
            return file(SHARED / name, request)
        if name == "admin.js" or (name.endswith(".css") and (folder / name).is_file() and "/" not in name):
            return file(folder / name, request)
        raise NotFound(f"the admin pages have no file {name!r}")

    return router
