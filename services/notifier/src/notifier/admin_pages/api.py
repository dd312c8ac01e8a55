"""Routes: the admin pages' files (the page calls this service's own API with the browser session)."""

from __future__ import annotations

from pathlib import Path

from casebridge_shared.screens import page_router

router = page_router("/admin", Path(__file__).parent / "static", tags=["admin pages"])
