"""Serving the screens: the shared screen kit at ``/assets/kit/`` and a page folder per screen.

A page is a folder: ``index.html`` + its own ``.js`` module + optional ``.css``, ``i18n/*.json``,
icons, a manifest and a service worker. ``page_router`` serves it with the page
Content-Security-Policy (no 'unsafe-inline'), validators for caching, and gzip for text, and
answers any extension-less path under the page with ``index.html`` so the page can have its
own client-side routes (``/console/cases/<id>``). docs/screens.md.

Caching: every file carries a strong ``ETag`` (a hash of its bytes) and ``Cache-Control:
no-cache``, so the browser keeps it and only revalidates (a 304 with no body). A URL with
``?v=<hash>`` equal to the file's hash is immutable for a year (for pages that stamp their
URLs; ``asset_version`` gives the hash).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from casebridge_shared.problems import NotFound
from casebridge_shared.web import page_csp

KIT_DIR = Path(__file__).parent / "kit"
KIT_PREFIX = "/assets/kit"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
# Worth compressing (text); images and fonts are compressed already.
COMPRESSIBLE = frozenset({".html", ".js", ".mjs", ".css", ".json", ".webmanifest", ".svg", ".txt"})
MIN_GZIP_BYTES = 512
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int]  # (mtime_ns, size): reloaded when the file changes (development)
    raw: bytes
    gzipped: bytes | None
    version: str  # first 16 hex digits of the SHA-256 of ``raw``


class AssetFiles:
    """Files of one folder, loaded on first use and kept in memory with their gzip form."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._loaded: dict[Path, _Loaded] = {}

    def resolve(self, name: str) -> Path | None:
        """The file ``name`` names inside the folder, or None (no escaping it, no hidden files)."""
        if not name or name.startswith("/") or "\\" in name:
            return None
        parts = name.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        path = (self.folder / name).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            return None
        if path.suffix not in CONTENT_TYPES:
            return None
        return path

    def load(self, path: Path) -> _Loaded:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        loaded = self._loaded.get(path)
        if loaded is None or loaded.stamp != stamp:
            raw = path.read_bytes()
            gzipped = (
                gzip.compress(raw, compresslevel=9, mtime=0)
                if path.suffix in COMPRESSIBLE and len(raw) >= MIN_GZIP_BYTES
                else None
            )
            loaded = _Loaded(stamp, raw, gzipped, hashlib.sha256(raw).hexdigest()[:16])
            self._loaded[path] = loaded
        return loaded

    def version(self, name: str) -> str | None:
        path = self.resolve(name)
        return None if path is None else self.load(path).version

    def response(self, request: Request, path: Path, headers: dict[str, str]) -> Response:
        return bytes_response(request, self.load(path), CONTENT_TYPES[path.suffix], headers)


def bytes_response(request: Request, loaded: _Loaded, content_type: str, headers: dict[str, str]) -> Response:
    """The file's answer: gzip when the browser takes it, 304 when its copy is current."""
    use_gzip = loaded.gzipped is not None and "gzip" in request.headers.get("accept-encoding", "").lower()
    etag = f'"{loaded.version}{"-gz" if use_gzip else ""}"'
    out = dict(headers)
    out["ETag"] = etag
    out["Vary"] = "Accept-Encoding"
    out.setdefault(
        "Cache-Control", IMMUTABLE if request.query_params.get("v") == loaded.version else REVALIDATE
    )
    if use_gzip:
        out["Content-Encoding"] = "gzip"
    match = request.headers.get("if-none-match", "")
    if match and (match.strip() == "*" or etag in [m.strip().removeprefix("W/") for m in match.split(",")]):
        return Response(status_code=304, headers=out)
    body = loaded.gzipped if use_gzip and loaded.gzipped is not None else loaded.raw
    if request.method == "HEAD":
        out["Content-Length"] = str(len(body))
        return Response(status_code=200, headers=out, media_type=content_type)
    return Response(body, headers=out, media_type=content_type)


def kit_router(service: str) -> APIRouter:
    """``/assets/kit/``: kit.js, kit.css, the kit's i18n and ``service.js`` (this service's
    name, which kit.js imports to find its CSRF cookie)."""
    router = APIRouter(prefix=KIT_PREFIX, include_in_schema=False)
    files = AssetFiles(KIT_DIR)
    source = f"export const SERVICE = {json.dumps(service)};\n".encode()
    service_js = _Loaded((0, len(source)), source, None, hashlib.sha256(source).hexdigest()[:16])
    headers = {"Content-Security-Policy": page_csp()}

    @router.api_route("/service.js", methods=["GET", "HEAD"])
    async def service_module(request: Request) -> Response:
        return bytes_response(request, service_js, CONTENT_TYPES[".js"], headers)

    @router.api_route("/{name:path}", methods=["GET", "HEAD"])
    async def kit_file(name: str, request: Request) -> Response:
        path = files.resolve(name)
        if path is None:
            raise NotFound(f"The screen kit has no file {name!r}.", field="name")
        return files.response(request, path, headers)

    return router


def page_router(
    prefix: str,
    folder: Path,
    *,
    connect_src: Sequence[str] = (),
    tags: Sequence[str] = ("screens",),
    extra_headers: dict[str, str] | None = None,
) -> APIRouter:
    """Serve the page folder ``folder`` at ``prefix`` (e.g. ``/console``).

    * ``{prefix}`` redirects to ``{prefix}/``;
    * a file of the folder is served by its path (``{prefix}/console.js``, ``{prefix}/i18n/en.json``);
    * any other path without a file extension is a client-side route: ``index.html``;
    * everything else is a 404 problem.

    Routes a service adds for the page (a ``config.json``) go on its own router, included
    before this one. ``connect_src`` adds origins the page may call besides its own.
    """
    prefix = prefix.rstrip("/")
    files = AssetFiles(folder)
    headers = {"Content-Security-Policy": page_csp(connect_src=connect_src), **(extra_headers or {})}
    router = APIRouter(prefix=prefix, include_in_schema=False, tags=list(tags))
    index = files.folder / "index.html"

    @router.get("")
    async def page_root() -> RedirectResponse:
        return RedirectResponse(f"{prefix}/", status_code=308)

    @router.api_route("/{name:path}", methods=["GET", "HEAD"])
    async def page_file(name: str, request: Request) -> Response:
        path = files.resolve(name) if name else index
        if path is None:
            last = name.rsplit("/", 1)[-1]
            if "." in last or not index.is_file():
                raise NotFound(f"The page {prefix}/ has no file {name!r}.", field="name")
            path = index  # a client-side route of the page
        return files.response(request, path, headers)

    return router
