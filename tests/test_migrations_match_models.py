"""Each service's migrations build exactly the schema its models declare (no drift either way)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from casebridge_shared.testing import DatabaseTemplates

SERVICES = {
    "order-intake": "order_intake",
    "case-handling": "case_handling",
    "notifier": "notifier",
    "customer-ledger": "customer_ledger",
}


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_migrations_at_head_match_the_models(
    service: str, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    package = SERVICES[service]
    models = importlib.import_module(f"{package}.models")
    migrations: Path = importlib.import_module(f"{package}.db").MIGRATIONS
    url = await db_templates.fresh(service, migrations, tmp_path)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            def diff(sync_conn: Any) -> list[Any]:
                return list(compare_metadata(MigrationContext.configure(sync_conn), models.metadata))

            found = await conn.run_sync(diff)
    finally:
        await engine.dispose()
        await db_templates.drop(url)
    assert found == [], f"{service}: the models and the migrations differ; write a migration:\n{found}"
