"""Routes: the customer portal at ``/portal/`` (issue 26 section 1).

The portal is one page folder (``static/``: ``index.html``, ``portal.js``, ``portal.css``,
``i18n/``) served by the screen kit's ``page_router``: a file by its path, and any other path
without an extension is a client-side route answered with ``index.html``, so a link in an email
(``/portal/orders/<id>``, ``/portal/reset-password?token=...``) opens the right view. Only the
page's configuration is this module's own route. docs/portal.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import BaseModel

from casebridge_shared.screens import page_router

STATIC = Path(__file__).parent / "static"


class PortalConfig(BaseModel):
    """What the page needs to know before it talks to the API: the limits on the customer's
    files (the page warns per file before sending; the server checks again)."""

    max_file_bytes: int
    allowed_types: list[str]
    files_per_upload: int


config_router = APIRouter(prefix="/portal", tags=["customer portal"], include_in_schema=False)


@config_router.get("/config.json", response_model=PortalConfig)
async def portal_config(request: Request) -> PortalConfig:
    settings = request.app.state.container.settings
    return PortalConfig(
        max_file_bytes=settings.customer_file_max_bytes,
        allowed_types=list(settings.customer_file_allowed_types),
        files_per_upload=settings.customer_files_per_upload,
    )


router = APIRouter()
router.include_router(config_router)  # before the page's catch-all
router.include_router(page_router("/portal", STATIC, tags=("customer portal",)))
