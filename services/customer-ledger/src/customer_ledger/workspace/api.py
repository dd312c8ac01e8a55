"""Routes: the department, admin and auditor workspace at ``/workspace/`` (issue 26 §3), and
``GET /me/permissions``, which tells its pages what to offer.

The pages are static files (an ``index.html``, ES modules, a stylesheet, dictionaries) under
the page policy (no inline script or style); they call this service's API with the browser
session's cookie and check the journal's proofs themselves (``verify.js``).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, RedirectResponse

from casebridge_shared.auth import CurrentUser
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import PROBLEM_RESPONSES, NotFound
from casebridge_shared.web import page_csp
from customer_ledger.deps import WritesDep
from customer_ledger.records import Actor, record_read
from customer_ledger.workspace import service
from customer_ledger.workspace.models import Permissions

STATIC = FilePath(__file__).parent / "static"
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
# Only these files are served: a fixed list, so no path from a request reaches the file system.
FILES = {
    str(p.relative_to(STATIC)): p
    for p in sorted(STATIC.rglob("*"))
    if p.is_file() and p.suffix in TYPES and p.name != "index.html"
}

me = APIRouter(prefix="/me", tags=["workspace"], responses=PROBLEM_RESPONSES)
pages = APIRouter(prefix="/workspace", tags=["workspace"], include_in_schema=False)


@me.get("/permissions", response_model=Permissions, summary="What the signed-in user may read and do here")
async def my_permissions(user: CurrentUser, writes: WritesDep) -> Permissions:
    """Derived from the user's roles, department and the grants in force (read now, like every
    request). The read of the department's grants is journaled like every read."""

    async def look_up_and_record(uow: UnitOfWork) -> Permissions:
        result = await service.permissions(uow.session, user)
        await record_read(uow.session, Actor.of(user), "permissions")
        return result

    return await writes.run(look_up_and_record)


HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": page_csp()}


@pages.get("")
async def workspace_root() -> RedirectResponse:
    return RedirectResponse("/workspace/", status_code=308)


@pages.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


@pages.get("/{name:path}")
async def static_file(name: Annotated[str, Path(max_length=200)]) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"the workspace has no file {name!r}")
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)
