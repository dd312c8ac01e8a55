"""Fixtures for case-handling: a fresh migrated database per test, the real app, real tokens.

Order events are built here as order-intake publishes them (CloudEvents with the
same data), by small factories: case-handling's tests never import order-intake.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from case_handling.bootstrap import Container, bootstrap
from case_handling.cases import service
from case_handling.cases.models import Case
from case_handling.db import MIGRATIONS
from case_handling.intake.events import ORDER_PLACED, PAYLOAD_MODELS
from case_handling.main import create_application
from case_handling.settings import Settings
from casebridge_shared.events import CloudEvent
from casebridge_shared.testing import DatabaseTemplates, TokenMinter


@pytest.fixture
async def database_url(db_templates: DatabaseTemplates, tmp_path: Path) -> AsyncIterator[str]:
    url = await db_templates.fresh("case-handling", MIGRATIONS, tmp_path)
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
        attachment_max_bytes=64 * 1024,
        consumer_max_attempts=2,
    )


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    c = bootstrap(settings)
    yield c
    await c.close()


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture
async def app(container: Container, minter: TokenMinter) -> AsyncIterator[FastAPI]:
    application = create_application(container.settings, container)
    async with application.router.lifespan_context(application):
        application.state.token_verifier = minter.verifier()
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://case-handling"
    ) as c:
        yield c


# --- factories ----------------------------------------------------------------------


def order_data(order_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The data of an order event, as order-intake publishes it."""
    now = datetime.now(UTC).isoformat()
    data: dict[str, Any] = {
        "order_id": order_id or str(uuid.uuid4()),
        "customer": {
            "customer_id": str(uuid.uuid4()),
            "full_name": "Ada Lovelace",
            "email": "ada@example.org",
            "phone": "+44 20 7946 0000",
        },
        "product": {
            "product_id": str(uuid.uuid4()),
            "title": "Tenancy agreement review",
            "description": "A lawyer reviews your tenancy agreement.",
            "deliverables": ["Written review"],
            "category": "tenancy",
            "price": "149.00",
            "currency": "EUR",
            "version": 1,
        },
        "description": "My landlord wants to raise the rent by 30%. Is that allowed?",
        "status": "submitted",
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    data.update(overrides)
    return data


def order_event(type_: str = ORDER_PLACED, *, version: int = 1, **data_overrides: Any) -> CloudEvent:
    data = order_data(**data_overrides)
    data["version"] = version
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake",
        type=type_,
        time=datetime.now(UTC),
        partitionkey=data["order_id"],
        aggregateversion=version,
        data=data,
    )


class Factory:
    """Cases made the way the worker makes them: by applying an order event."""

    def __init__(self, container: Container) -> None:
        self.container = container

    async def case(self, **data_overrides: Any) -> Case:
        event = order_event(**data_overrides)
        payload = PAYLOAD_MODELS[event.type].model_validate(event.data)
        async with self.container.uow() as uow:
            case_id = await service.open_case(uow, payload, event.aggregateversion)  # type: ignore[arg-type]
            await uow.commit()
        assert case_id is not None
        async with self.container.db.session() as session:
            case = await session.get(Case, case_id)
        assert case is not None
        return case


@pytest.fixture
def factory(container: Container) -> Factory:
    return Factory(container)
