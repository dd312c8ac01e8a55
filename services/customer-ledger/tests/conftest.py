"""Fixtures for customer-ledger: a fresh migrated database per test and the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared.testing import DatabaseTemplates, TokenMinter
from customer_ledger.bootstrap import Container, bootstrap
from customer_ledger.db import MIGRATIONS
from customer_ledger.main import create_application
from customer_ledger.settings import Settings


@pytest.fixture
async def database_url(db_templates: DatabaseTemplates, tmp_path: Path) -> AsyncIterator[str]:
    url = await db_templates.fresh("customer-ledger", MIGRATIONS, tmp_path)
    yield url
    await db_templates.drop(url)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(environment="test", database_url=database_url, var_dir=tmp_path, log_json=False)


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    c = bootstrap(settings)
    yield c
    await c.close()


@pytest.fixture
async def app(container: Container) -> AsyncIterator[FastAPI]:
    application = create_application(container.settings, container)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://customer-ledger"
    ) as c:
        yield c


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture
async def api(app: FastAPI, minter: TokenMinter) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app that checks the minter's tokens for real."""
    app.state.token_verifier = minter.verifier()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://customer-ledger"
    ) as c:
        yield c
