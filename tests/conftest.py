"""The cross-service harness: the real apps over HTTP, the real workers, one real broker.

Each service's api is a uvicorn server on a free port and its worker is the
same ``work()`` coroutine ``<service> worker`` runs; both can be stopped and
started again mid-test, which is how the autonomy tests take a platform down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import case_handling.bootstrap
import case_handling.main
import case_handling.worker
import customer_ledger.bootstrap
import notifier.bootstrap
import notifier.main
import notifier.worker
import order_intake.bootstrap
import order_intake.main
import order_intake.worker
from case_handling.db import MIGRATIONS as CASE_MIGRATIONS
from case_handling.settings import Settings as CaseSettings
from casebridge_shared.broker import EmbeddedBroker, free_port
from casebridge_shared.inbox import EventConsumer
from casebridge_shared.testing import ApiServer as Api
from casebridge_shared.testing import DatabaseTemplates, wait_until
from customer_ledger.settings import Settings as LedgerSettings
from notifier.db import MIGRATIONS as NOTIFIER_MIGRATIONS
from notifier.settings import Settings as NotifierSettings
from order_intake.db import MIGRATIONS as INTAKE_MIGRATIONS
from order_intake.settings import Settings as IntakeSettings

ADMIN = ("admin@casebridge.example", "changethis")
PASSWORD = "correct-horse-battery"


class Worker:
    """One worker process: ``work(settings, stop)`` until stopped."""

    def __init__(self, work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.work = work
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.work(self._stop))

    async def stop(self) -> None:
        if self._stop is not None and self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, timeout=60)
        self._stop = self._task = None


@dataclass
class Platform:
    settings: Any
    api: Api
    worker: Worker

    async def start(self) -> None:
        await self.api.start()
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        await self.api.stop()


@dataclass
class Stack:
    broker: EmbeddedBroker
    intake: Platform
    cases: Platform
    # Reserved for a notifier started by a test: order-intake lets its staff app sign in (CORS).
    notifier_port: int
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, platform: Platform, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.AsyncClient(base_url=platform.api.url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    async def login(self, email: str, password: str = PASSWORD) -> str:
        async with httpx.AsyncClient(base_url=self.intake.api.url, timeout=30) as c:
            r = await c.post("/auth/token", data={"username": email, "password": password})
            assert r.status_code == 200, r.text
            return str(r.json()["access_token"])

    async def register_customer(self, email: str) -> httpx.AsyncClient:
        async with httpx.AsyncClient(base_url=self.intake.api.url, timeout=30) as c:
            r = await c.post(
                "/auth/register", json={"email": email, "password": PASSWORD, "full_name": "Ada Lovelace"}
            )
            assert r.status_code == 201, r.text
        return self.client(self.intake, await self.login(email))

    async def staff(self, email: str, *roles: str, department: str | None = None) -> str:
        """A staff (or department) user created by the admin, logged in; returns the token."""
        admin = self.client(self.intake, await self.login(*ADMIN))
        r = await admin.post(
            "/users",
            json={
                "email": email,
                "password": PASSWORD,
                "full_name": "Sam Staff",
                "roles": list(roles or ["staff"]),
                **({"department": department} if department else {}),
            },
        )
        assert r.status_code == 201, r.text
        return await self.login(email)

    async def product(self) -> str:
        admin = self.client(self.intake, await self.login(*ADMIN))
        r = await admin.post(
            "/products",
            json={
                "title": "Employment contract review",
                "description": "A lawyer reviews your employment contract.",
                "deliverables": ["Written review", "Call"],
                "category": "employment",
                "price": "149.00",
                "currency": "EUR",
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@asynccontextmanager
async def notifier_platform(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path, *, smtp_port: int = 9
) -> AsyncIterator[Platform]:
    """The notifier's api (on ``stack.notifier_port``) and worker, on the stack's broker and token issuer."""
    var = tmp_path / "notifier"
    var.mkdir()
    url = await db_templates.fresh("notifier", NOTIFIER_MIGRATIONS, var)
    port = stack.notifier_port
    settings = NotifierSettings(
        environment="test",
        database_url=url,
        var_dir=var,
        port=port,
        kafka_bootstrap_servers=stack.broker.bootstrap_servers,
        token_issuer=stack.intake.api.url,
        log_json=False,
        worker_metrics_port=0,
        smtp_port=smtp_port,
        customer_portal_url=stack.intake.api.url,
        case_handling_public_url=stack.cases.api.url,  # the staff app's alerts link to its console
        stream_poll_seconds=0.02,
        delivery_poll_seconds=0.02,
        outbound_allow=["127.0.0.1"],  # the test's push service and webhook receiver
    )
    platform = Platform(
        settings,
        Api(lambda: notifier.main.create_application(settings), port),
        Worker(lambda stop: notifier.worker.work(settings, stop)),
    )
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()
        await db_templates.drop(url)


@asynccontextmanager
async def ledger_platform(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path, **settings_overrides: Any
) -> AsyncIterator[Platform]:
    """The customer-ledger's api and worker, on the stack's broker and token issuer."""
    import customer_ledger.main
    import customer_ledger.worker
    from customer_ledger.db import MIGRATIONS as LEDGER_MIGRATIONS
    from customer_ledger.settings import Settings as LedgerSettings

    var = tmp_path / "ledger"
    var.mkdir()
    url = await db_templates.fresh("customer-ledger", LEDGER_MIGRATIONS, var)
    port = free_port()
    settings = LedgerSettings(
        environment="test",
        database_url=url,
        var_dir=var,
        port=port,
        kafka_bootstrap_servers=stack.broker.bootstrap_servers,
        token_issuer=stack.intake.api.url,
        log_json=False,
        worker_metrics_port=0,
        **settings_overrides,
    )
    platform = Platform(
        settings,
        Api(lambda: customer_ledger.main.create_application(settings), port),
        Worker(lambda stop: customer_ledger.worker.work(settings, stop)),
    )
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()
        await db_templates.drop(url)


async def notifier_knows(platform: Platform, email: str) -> None:
    """Wait until the notifier's directory has the user (it learns users from identity events)."""
    from sqlmodel import select

    from notifier.bootstrap import bootstrap as notifier_bootstrap
    from notifier.directory.models import Person

    container = notifier_bootstrap(platform.settings)
    try:

        async def known() -> bool:
            async with container.db.session() as s:
                return (await s.exec(select(Person).where(Person.email == email))).first() is not None

        await wait_until(known, timeout=90, message=f"the notifier's directory knows {email}")
    finally:
        await container.close()


@pytest.fixture
async def stack(
    broker: EmbeddedBroker, db_templates: DatabaseTemplates, tmp_path: Path
) -> AsyncIterator[Stack]:
    intake_port, cases_port, notifier_port = free_port(), free_port(), free_port()
    intake_url, cases_url = f"http://127.0.0.1:{intake_port}", f"http://127.0.0.1:{cases_port}"
    intake_db = await db_templates.fresh("order-intake", INTAKE_MIGRATIONS, tmp_path)
    cases_dir = tmp_path / "case-handling"
    cases_dir.mkdir()
    cases_db = await db_templates.fresh("case-handling", CASE_MIGRATIONS, cases_dir)
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap_servers": broker.bootstrap_servers,
        "token_issuer": intake_url,
        "log_json": False,
        "relay_poll_interval_seconds": 0.01,
    }
    intake_settings = IntakeSettings(
        **common,
        database_url=intake_db,
        var_dir=tmp_path / "intake-var",
        port=intake_port,
        case_handling_url=cases_url,
        cors_allow_origins=[f"http://127.0.0.1:{notifier_port}"],
        signing_key_reload_seconds=0,
        document_fetch_poll_seconds=0.05,
        document_fetch_backoff_seconds=0.05,
        document_fetch_max_backoff_seconds=0.5,
        worker_metrics_port=0,
    )
    case_settings = CaseSettings(
        **common,
        database_url=cases_db,
        var_dir=tmp_path / "cases-var",
        port=cases_port,
        worker_metrics_port=0,
        # The customer's order files are fetched from order-intake (issue 26).
        order_intake_url=intake_url,
        customer_file_fetch_poll_seconds=0.05,
        customer_file_fetch_backoff_seconds=0.05,
        customer_file_fetch_max_backoff_seconds=0.5,
    )
    stack = Stack(
        broker=broker,
        notifier_port=notifier_port,
        intake=Platform(
            intake_settings,
            Api(lambda: order_intake.main.create_application(intake_settings), intake_port),
            Worker(lambda stop: order_intake.worker.work(intake_settings, stop)),
        ),
        cases=Platform(
            case_settings,
            Api(lambda: case_handling.main.create_application(case_settings), cases_port),
            Worker(lambda stop: case_handling.worker.work(case_settings, stop)),
        ),
    )
    # order-intake first: it makes the signing key the others verify against.
    await stack.intake.start()
    await stack.cases.start()
    try:
        yield stack
    finally:
        for c in stack.clients:
            await c.aclose()
        with contextlib.suppress(Exception):
            await stack.cases.stop()
        with contextlib.suppress(Exception):
            await stack.intake.stop()
        await db_templates.drop(intake_db)
        await db_templates.drop(cases_db)


@pytest.fixture
def service_consumers(tmp_path: Path) -> dict[str, EventConsumer]:
    """Each service's worker consumer, as its bootstrap builds it (nothing is started).

    Its handlers, reader models and trusted sources are what the contract tests
    (test_event_rules.py, test_contracts_consumers.py) hold against the producers.
    """
    common: dict[str, Any] = {"environment": "test", "var_dir": tmp_path}
    return {
        "order-intake": order_intake.bootstrap.Container(
            settings=IntakeSettings(**common),
            db=None,
            keys=None,  # type: ignore[arg-type]
        ).consumer(),
        "case-handling": case_handling.bootstrap.Container(
            settings=CaseSettings(**common),
            db=None,  # type: ignore[arg-type]
        ).consumer(),
        "notifier": notifier.bootstrap.Container(
            settings=NotifierSettings(**common),
            db=None,  # type: ignore[arg-type]
            vapid=None,  # type: ignore[arg-type]
            webhook_secrets=None,  # type: ignore[arg-type]
        ).consumer(),
        "customer-ledger": customer_ledger.bootstrap.Container(
            settings=LedgerSettings(**common),
            db=None,  # type: ignore[arg-type]
            signer=None,  # type: ignore[arg-type]
        ).consumer(),
    }
