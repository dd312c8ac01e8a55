"""Routes: the staff alerts app (a small PWA) at ``/app``: its configuration, then its files.

The app signs in at this service's own ``/session`` (casebridge_shared.browser_session: the
session in HttpOnly cookies, the password checked by order-intake server-side) and uses the
screen kit at ``/assets/kit/``; docs/screens.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from casebridge_shared.screens import page_router

STATIC = Path(__file__).parent / "static"

config_router = APIRouter(prefix="/app", tags=["staff app"], include_in_schema=False)


class AppConfig(BaseModel):
    case_console_url: str  # an alert's case opens at <case_console_url>/cases/<case_id>


@config_router.get("/config.json", response_model=AppConfig)
async def app_config(request: Request, response: Response) -> AppConfig:
    settings = request.app.state.container.settings
    response.headers["Cache-Control"] = "no-cache"
    return AppConfig(case_console_url=f"{settings.case_handling_public_url.rstrip('/')}/console")


# index.html, app.js, app.css, i18n/, sw.js (its scope is /app/), the manifest and icon.
files_router = page_router("/app", STATIC, tags=["staff app"])

router = APIRouter()
router.include_router(config_router)
router.include_router(files_router)
