"""The case-handling ASGI app: ``uvicorn case_handling.main:app``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from case_handling import __version__
from case_handling.bootstrap import Container, bootstrap
from case_handling.cases.api import router as cases_router
from case_handling.cases.feed import CaseFeed
from case_handling.console.api import router as console_router
from case_handling.db import revocations
from case_handling.settings import Settings, get_settings
from case_handling.threads.api import router as threads_router
from casebridge_shared import oidc
from casebridge_shared.auth import RememberingVerifier
from casebridge_shared.logs import configure_logging
from casebridge_shared.revocation import RevocationList
from casebridge_shared.web import create_app

ATTACHMENT_UPLOAD = re.compile(r"/cases/[^/]+/attachments")

DESCRIPTION = """

Staff turn orders into cases, analyse the legal need, record communications,
propose solutions and upload documents. Its own database; works while order-
intake is down.

Tokens come from order-intake (`POST /auth/token`) and are verified here
against its published keys. Errors are RFC 9457 `application/problem+json`.
"""


def create_application(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        c = container or bootstrap(settings)
        app.state.container = c
        app.state.token_verifier = RememberingVerifier(
            oidc.token_verifier(settings, settings.issuer_keys_path), max_age=settings.jwks_cache_seconds
        )
        app.state.readiness_checks["database"] = c.db.ping
        # Every request: is the user disabled or the session revoked (identity events kept here)?
        app.state.revocations = RevocationList(
            c.db, revocations, refresh_seconds=settings.revocation_refresh_seconds
        )
        app.state.case_feed = CaseFeed(c.db, poll_seconds=settings.stream_poll_seconds)
        try:
            yield
        finally:
            await app.state.case_feed.close()
            if owned:
                await c.close()

    app = create_app(
        service="case-handling",
        title="Casebridge case-handling",
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        max_body_bytes=settings.max_request_body_bytes,
        trusted_proxies=settings.trusted_proxies,
        metrics_token=settings.metrics_token.get_secret_value(),
        # Uploads may be as large as an attachment plus the multipart framing.
        body_limit_overrides={ATTACHMENT_UPLOAD: settings.attachment_max_bytes + 64 * 1024},
    )
    app.include_router(cases_router)
    app.include_router(threads_router)
    app.include_router(console_router)
    return app


def _app() -> FastAPI:
    settings = get_settings()
    configure_logging("case-handling", level=settings.log_level, json=settings.log_json)
    return create_application(settings)


def __getattr__(name: str) -> FastAPI:
    # ``case_handling.main:app`` is built on first access, so importing this module
    # (tests, the CLI) does not read settings or configure logging.
    if name == "app":
        return _app()
    raise AttributeError(name)
