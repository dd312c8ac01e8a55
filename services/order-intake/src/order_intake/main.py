"""The order-intake ASGI app: ``uvicorn order_intake.main:app``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from casebridge_shared import metrics, oidc
from casebridge_shared.auth import KeyResolverVerifier, RememberingVerifier
from casebridge_shared.logs import configure_logging
from casebridge_shared.outbox import relay_status
from casebridge_shared.problems import Conflict
from casebridge_shared.revocation import RevocationList
from casebridge_shared.web import create_app
from order_intake import __version__
from order_intake.admin_pages.api import router as admin_pages_router
from order_intake.bootstrap import Container, bootstrap
from order_intake.catalog.api import router as catalog_router
from order_intake.db import outbox, revocations
from order_intake.documents.api import router as documents_router
from order_intake.identity import service as identity_service
from order_intake.identity.api import router as identity_router
from order_intake.identity.browser import LocalSessionIssuer
from order_intake.orders.api import router as orders_router
from order_intake.orders.live import OrderWatch
from order_intake.portal.api import router as portal_router
from order_intake.relay.api import router as relay_router
from order_intake.settings import Settings, get_settings
from order_intake.threads.api import router as threads_router

log = structlog.get_logger(__name__)

CUSTOMER_FILES_UPLOAD = re.compile(r"/orders/[^/]+/files")

DESCRIPTION = """
The intake platform: the legal product catalog, customer accounts, orders and
the customer's view of progress and solutions. Issues the access tokens every
Casebridge service accepts (`POST /auth/token`, keys at `/.well-known/jwks.json`).

Errors are RFC 9457 `application/problem+json`.
"""


async def _ensure_bootstrap_admin(container: Container) -> None:
    settings = container.settings
    async with container.uow() as uow:
        try:
            created = await identity_service.ensure_bootstrap_admin(
                uow, settings.bootstrap_admin_email, settings.bootstrap_admin_password.get_secret_value()
            )
        except Conflict:
            return  # another replica created it at the same moment
    if created is not None:
        log.info("identity.bootstrap_admin_created", user_id=created.id)  # an id, never the email


def create_application(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        c = container or bootstrap(settings)
        await c.keys.load()
        await _ensure_bootstrap_admin(c)
        app.state.container = c
        # Its own tokens against the keys it holds; with oidc_issuer, the provider's as well.
        own = KeyResolverVerifier(
            c.keys.public_key, issuer=settings.token_issuer, audience=settings.token_audience
        )
        app.state.token_verifier = RememberingVerifier(
            oidc.token_verifier(settings, settings.issuer_keys_path, own=own),
            max_age=settings.jwks_cache_seconds,
        )
        app.state.session_issuer = LocalSessionIssuer(c)  # /session checks passwords here, not remotely
        app.state.readiness_checks["database"] = c.db.ping
        # Every request: is the user disabled or the session revoked (identity events kept here)?
        app.state.revocations = RevocationList(
            c.db, revocations, refresh_seconds=settings.revocation_refresh_seconds
        )

        async def relay_gauges() -> None:
            status = await relay_status(c.db, outbox, runs=0)
            metrics.RELAY_BACKLOG.labels("order-intake").set(status.backlog)
            metrics.RELAY_OLDEST_UNPUBLISHED_SECONDS.labels("order-intake").set(
                status.oldest_unpublished_age_seconds or 0
            )

        app.state.metrics_hooks.append(relay_gauges)
        # Live order pages (GET /orders/{id}/stream): one watcher of the database per process.
        app.state.order_watch = OrderWatch(c.db, poll_seconds=settings.stream_poll_seconds)
        try:
            yield
        finally:
            await app.state.order_watch.close()
            if owned:
                await c.close()

    app = create_app(
        service="order-intake",
        title="Casebridge order-intake",
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        max_body_bytes=settings.max_request_body_bytes,
        trusted_proxies=settings.trusted_proxies,
        metrics_token=settings.metrics_token.get_secret_value(),
        cors_allow_origins=settings.cors_allow_origins,
        # Customers' uploads may be as large as their files plus the multipart framing.
        body_limit_overrides={
            CUSTOMER_FILES_UPLOAD: settings.customer_file_max_bytes * settings.customer_files_per_upload
            + 64 * 1024
        },
    )
    for router in (
        identity_router,
        catalog_router,
        orders_router,
        documents_router,
        threads_router,
        relay_router,
        admin_pages_router,
        portal_router,
    ):
        app.include_router(router)
    return app


def _app() -> FastAPI:
    settings = get_settings()
    configure_logging("order-intake", level=settings.log_level, json=settings.log_json)
    return create_application(settings)


def __getattr__(name: str) -> FastAPI:
    # ``order_intake.main:app`` is built on first access, so importing this
    # module (tests, the CLI) does not read settings or configure logging.
    if name == "app":
        return _app()
    raise AttributeError(name)
