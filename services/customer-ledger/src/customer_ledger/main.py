"""The customer-ledger ASGI app: ``uvicorn customer_ledger.main:app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from casebridge_shared import oidc
from casebridge_shared.auth import RememberingVerifier, TokenVerifier
from casebridge_shared.logs import configure_logging
from casebridge_shared.revocation import RevocationList
from casebridge_shared.web import create_app
from customer_ledger import __version__
from customer_ledger.access.api import router as access_router
from customer_ledger.bootstrap import Container, bootstrap
from customer_ledger.customers.api import router as customers_router
from customer_ledger.db import revocations
from customer_ledger.grants.api import router as grants_router
from customer_ledger.journal import service as journal_service
from customer_ledger.journal.api import router as journal_router
from customer_ledger.settings import Settings, get_settings
from customer_ledger.workspace.api import me as me_router
from customer_ledger.workspace.api import pages as workspace_pages

DESCRIPTION = """

Per-department customer records with admin-granted read rights; every login,
read and change recorded in a verifiable Merkle journal.

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
        app.state.metrics_hooks.append(lambda: journal_service.refresh_checkpoint_gauges(c.db))
        # Every request: is the user disabled or the session revoked (identity events kept here)?
        app.state.revocations = RevocationList(
            c.db, revocations, refresh_seconds=settings.revocation_refresh_seconds
        )
        try:
            yield
        finally:
            if owned:
                await c.close()

    app = create_app(
        service="customer-ledger",
        title="Casebridge customer-ledger",
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        max_body_bytes=settings.max_request_body_bytes,
        trusted_proxies=settings.trusted_proxies,
        metrics_token=settings.metrics_token.get_secret_value(),
    )
    app.include_router(customers_router)
    app.include_router(grants_router)
    app.include_router(access_router)
    app.include_router(journal_router)
    app.include_router(me_router)
    app.include_router(workspace_pages)
    return app


def _app() -> FastAPI:
    settings = get_settings()
    configure_logging("customer-ledger", level=settings.log_level, json=settings.log_json)
    return create_application(settings)


def __getattr__(name: str) -> FastAPI:
    # ``customer_ledger.main:app`` is built on first access, so importing this module
    # (tests, the CLI) does not read settings or configure logging.
    if name == "app":
        return _app()
    raise AttributeError(name)
