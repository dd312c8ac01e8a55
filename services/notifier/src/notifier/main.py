"""The notifier ASGI app: ``uvicorn notifier.main:app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from casebridge_shared import oidc
from casebridge_shared.auth import RememberingVerifier, TokenVerifier
from casebridge_shared.logs import configure_logging
from casebridge_shared.revocation import RevocationList
from casebridge_shared.web import create_app
from notifier import __version__
from notifier.admin_pages.api import router as admin_pages_router
from notifier.app.api import router as app_router
from notifier.bootstrap import Container, bootstrap
from notifier.db import revocations
from notifier.deliveries.api import router as deliveries_router
from notifier.directory.api import router as directory_router
from notifier.notifications.api import router as notifications_router
from notifier.notifications.feed import NotificationFeed
from notifier.preferences.api import router as preferences_router
from notifier.routing.api import router as routing_router
from notifier.settings import Settings, get_settings

DESCRIPTION = """

Alerts staff at once: in-app stream, web push, email and webhooks; escalates
what nobody picks up.

Tokens come from order-intake (`POST /auth/token`) and are verified here
against its published keys. Errors are RFC 9457 `application/problem+json`.
"""


def create_application(
    settings: Settings | None = None,
    container: Container | None = None,
    token_verifier: TokenVerifier | None = None,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        c = container or bootstrap(settings)
        app.state.container = c
        app.state.token_verifier = RememberingVerifier(
            token_verifier or oidc.token_verifier(settings, settings.issuer_keys_path),
            max_age=settings.jwks_cache_seconds,
        )
        app.state.readiness_checks["database"] = c.db.ping
        # Every request: is the user disabled or the session revoked (identity events kept here)?
        app.state.revocations = RevocationList(
            c.db, revocations, refresh_seconds=settings.revocation_refresh_seconds
        )
        app.state.notification_feed = NotificationFeed(c.db, poll_seconds=settings.stream_poll_seconds)
        try:
            yield
        finally:
            await app.state.notification_feed.close()
            if owned:
                await c.close()

    app = create_app(
        service="notifier",
        title="Casebridge notifier",
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        max_body_bytes=settings.max_request_body_bytes,
        trusted_proxies=settings.trusted_proxies,
        metrics_token=settings.metrics_token.get_secret_value(),
    )
    app.include_router(notifications_router)
    app.include_router(preferences_router)
    app.include_router(deliveries_router)
    app.include_router(routing_router)
    app.include_router(directory_router)
    app.include_router(app_router)
    app.include_router(admin_pages_router)
    return app


def _app() -> FastAPI:
    settings = get_settings()
    configure_logging("notifier", level=settings.log_level, json=settings.log_json)
    return create_application(settings)


def __getattr__(name: str) -> FastAPI:
    # ``notifier.main:app`` is built on first access, so importing this module
    # (tests, the CLI) does not read settings or configure logging.
    if name == "app":
        return _app()
    raise AttributeError(name)
