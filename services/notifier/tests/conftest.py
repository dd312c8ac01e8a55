"""Fixtures for notifier: a fresh migrated database per test, the real app, a real broker, factories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker, free_port
from casebridge_shared.events import CASES_TOPIC, IDENTITY_TOPIC, CloudEvent
from casebridge_shared.testing import DatabaseTemplates, TokenMinter
from notifier.bootstrap import Container, bootstrap
from notifier.db import MIGRATIONS
from notifier.directory.models import Person
from notifier.main import create_application
from notifier.settings import Settings
from notifier.testing import Mailbox


@pytest.fixture
async def database_url(db_templates: DatabaseTemplates, tmp_path: Path) -> AsyncIterator[str]:
    url = await db_templates.fresh("notifier", MIGRATIONS, tmp_path)
    yield url
    await db_templates.drop(url)


@pytest.fixture
def kafka_bootstrap() -> str:
    """Tests that don't need a broker point at a port nothing listens on."""
    return "127.0.0.1:9"


@pytest.fixture
def settings(database_url: str, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        var_dir=tmp_path,
        log_json=False,
        consumer_max_attempts=2,
        stream_poll_seconds=0.02,
        delivery_poll_seconds=0.02,
        delivery_backoff_seconds=0.05,
        delivery_max_backoff_seconds=0.2,
        delivery_timeout_seconds=5,
        # The test receivers (push service, webhook endpoint) listen on this host: allowed the
        # way an operator allows an on-premises receiver; the guard itself stays on.
        outbound_allow=["127.0.0.1"],
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
    application = create_application(container.settings, container, minter.verifier())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier") as c:
        yield c


# --- factories ----------------------------------------------------------------------


class People:
    """People in the notifier's directory, and tokens for them."""

    def __init__(self, container: Container, minter: TokenMinter) -> None:
        self.container = container
        self.minter = minter

    async def add(self, *roles: str, name: str = "", active: bool = True) -> Person:
        user_id = str(uuid.uuid4())
        person = Person(
            user_id=user_id,
            email=f"{(name or 'user').lower().replace(' ', '.')}.{user_id[:6]}@casebridge.example",
            full_name=name,
            roles=" ".join(roles),
            active=active,
            version=1,
        )
        async with self.container.db.write_session() as session:
            session.add(person)
            await session.commit()
        return person

    def headers(self, person: Person | str, *roles: str) -> dict[str, str]:
        if isinstance(person, Person):
            return self.minter.headers(person.user_id, *(roles or tuple(person.roles.split())))
        return self.minter.headers(person, *roles)


@pytest.fixture
def people(container: Container, minter: TokenMinter) -> People:
    return People(container, minter)


class CaseEvents:
    """Builds the case events case-handling would publish for one case."""

    def __init__(self, *, category: str = "family-law", title: str = "Divorce consultation") -> None:
        self.case_id = str(uuid.uuid4())
        self.order_id = str(uuid.uuid4())
        self.customer_id = str(uuid.uuid4())
        self.category = category
        self.title = title
        self.version = 0
        self.clock = datetime.now(UTC)

    def event(self, kind: str, status: str, **data: Any) -> CloudEvent:
        self.version += 1
        self.clock += timedelta(seconds=1)
        payload = {
            "case_id": self.case_id,
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "status": status,
            "at": self.clock.isoformat(),
        } | data
        return CloudEvent(
            id=str(uuid.uuid4()),
            source="/casebridge/case-handling",
            type=f"casebridge.cases.{kind}.v1",
            subject=self.case_id,
            time=self.clock,
            partitionkey=self.case_id,
            aggregateversion=self.version,
            data=payload,
        )

    def opened(self) -> CloudEvent:
        return self.event("case-opened", "new", product_category=self.category, product_title=self.title)

    def assigned(self, assignee: str, by: str | None = None) -> CloudEvent:
        return self.event(
            "case-assigned",
            "assigned",
            assignee_id=assignee,
            assignee_name="Staff",
            assigned_by=by or assignee,
            product_category=self.category,
        )

    def solution(self) -> CloudEvent:
        return self.event(
            "solution-proposed",
            "solution_proposed",
            solution_summary="File for divorce by mutual consent.",
            solution_text="...",
            proposed_by="someone",
        )

    def closed(self) -> CloudEvent:
        return self.event("case-closed", "closed")

    def cancelled(self, assignee: str | None) -> CloudEvent:
        return self.event("case-cancelled", "cancelled", reason="customer withdrew", assignee_id=assignee)


def identity_event(person: Person, kind: str = "user-created") -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake",
        type=f"casebridge.identity.{kind}.v1",
        subject=person.user_id,
        time=datetime.now(UTC),
        partitionkey=person.user_id,
        aggregateversion=person.version,
        data={
            "user_id": person.user_id,
            "email": person.email,
            "full_name": person.full_name,
            "phone": None,
            "roles": person.roles.split(),
            "department": None,
            "active": person.active,
            "version": person.version,
        },
    )


async def publish(broker: EmbeddedBroker, *events: CloudEvent | bytes, topic: str = CASES_TOPIC) -> None:
    """Case events (and raw bytes) to ``topic``, identity events to the identity topic, in order."""
    for event in events:
        t = (
            topic
            if isinstance(event, bytes) or event.type.startswith("casebridge.cases.")
            else IDENTITY_TOPIC
        )
        await testing.publish(broker.bootstrap_servers, t, event)


async def consume_until(container: Container, condition: Callable[[], Awaitable[bool]]) -> None:
    await testing.consume_until(container.consumer, condition)


@pytest.fixture
def mailbox(container: Container) -> Mailbox:
    """An SMTP server for the container's email deliveries, on a free port (not started yet)."""
    port = free_port()
    container.settings.smtp_port = port
    return Mailbox(port)
