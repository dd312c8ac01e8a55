"""Fixtures for order-intake: a fresh migrated database per test, the real app, factories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared.auth import Department, Role
from casebridge_shared.db import utcnow
from casebridge_shared.testing import DatabaseTemplates
from order_intake.bootstrap import Container, bootstrap
from order_intake.catalog import service as catalog_service
from order_intake.catalog.models import Product, ProductCreate
from order_intake.db import MIGRATIONS
from order_intake.identity import service as identity_service
from order_intake.identity.models import CustomerRegistration, User, UserCreate
from order_intake.main import create_application
from order_intake.settings import Settings

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def database_url(db_templates: DatabaseTemplates, tmp_path: Path) -> AsyncIterator[str]:
    url = await db_templates.fresh("order-intake", MIGRATIONS, tmp_path)
    yield url
    await db_templates.drop(url)


@pytest.fixture
def kafka_bootstrap() -> str:
    """Tests that don't need a broker point at a port nothing listens on."""
    return "127.0.0.1:9"


@pytest.fixture
def settings(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, storage_settings: dict[str, Any]
) -> Settings:
    """Local files for users' files unless the test asks for S3 (``storage_backend``)."""
    return Settings(
        **storage_settings,
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        var_dir=tmp_path,
        log_json=False,
        relay_poll_interval_seconds=0.01,
    )


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    c = bootstrap(settings)
    await c.keys.load()
    yield c
    await c.close()


@pytest.fixture
async def app(container: Container) -> AsyncIterator[FastAPI]:
    application = create_application(container.settings, container)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://order-intake") as c:
        yield c


class Factory:
    """Small builders for test data, through the real services."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self._n = 0

    def _email(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}@example.org"

    def token(self, user: User, *, lifetime: timedelta = timedelta(minutes=10)) -> str:
        s = self.container.settings
        return identity_service.issue_token(
            self.container.keys,
            user,
            issuer=s.token_issuer,
            audience=s.token_audience,
            lifetime=lifetime,
            now=utcnow(),
        )

    def auth(self, user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    async def customer(self, **overrides: Any) -> User:
        data = {
            "email": self._email("customer"),
            "password": PASSWORD,
            "full_name": "Carla Customer",
        } | overrides
        async with self.container.uow() as uow:
            return await identity_service.register_customer(uow, CustomerRegistration(**data))

    async def user(self, role: Role, department: Department | None = None, **overrides: Any) -> User:
        data = {
            "email": self._email(role.value),
            "password": PASSWORD,
            "full_name": f"{role.value.title()} User",
            "roles": [role],
            "department": department,
        } | overrides
        async with self.container.uow() as uow:
            return await identity_service.create_user(uow, UserCreate(**data))

    async def product(self, **overrides: Any) -> Product:
        data = {
            "title": "Contract review",
            "description": "A lawyer reviews your contract.",
            "deliverables": ["Written review"],
            "category": "contracts",
            "price": Decimal("199.00"),
            "currency": "EUR",
        } | overrides
        async with self.container.uow() as uow:
            return await catalog_service.create_product(uow, ProductCreate(**data))


@pytest.fixture
def factory(container: Container) -> Factory:
    return Factory(container)
