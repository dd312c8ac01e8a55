"""Pytest fixtures every test suite of the project uses (loaded by the root ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.testing import DatabaseTemplates


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
