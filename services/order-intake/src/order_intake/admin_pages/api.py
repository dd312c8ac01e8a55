"""Routes: the admin pages' files (the page calls this service's own API only)."""

from __future__ import annotations

from pathlib import Path

from casebridge_shared.admin_pages import admin_pages_router

router = admin_pages_router(Path(__file__).parent / "static")
