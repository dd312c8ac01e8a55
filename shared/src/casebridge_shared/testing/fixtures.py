"""Pytest fixtures every test suite of the project uses (loaded by the root ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.testing import DatabaseTemplates
from casebridge_shared.testing.object_storage import S3Server


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseTemplates]:
    """Each service's schema migrated once per session; tests get copies (SQLite) or clones (PostgreSQL)."""
    templates = DatabaseTemplates(tmp_path_factory.mktemp("db-templates"))
    yield templates
    templates.drop_all()


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh embedded Kafka-compatible broker (Tansu, in memory) for one test."""
    b = EmbeddedBroker()
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server, started once per session (each test gets its own bucket)."""
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def storage_backend() -> str:
    """Local files, the default; ``parametrize("storage_backend", STORAGE_BACKENDS)`` runs a test on both."""
    return "local"


@pytest.fixture
def storage_settings(storage_backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """What a service's settings fixture merges in for the chosen store."""
    if storage_backend == "local":
        return {}
    server: S3Server = request.getfixturevalue("s3_server")
    return server.settings(server.new_bucket())
