"""Helpers for the test suites of every service: real databases, a real broker.

Databases: SQLite by default; with ``CASEBRIDGE_TEST_POSTGRES_URL`` set
(e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``) every test
gets a fresh PostgreSQL database cloned from a migrated template.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import uvicorn
from sqlalchemy import and_, event, func, literal, select, true
from sqlalchemy.engine import make_url

from casebridge_shared import migrations
from casebridge_shared.db import Database, UTCDateTime, utcnow
from casebridge_shared.kafka import ensure_topics, guarded_consumer, guarded_producer
from casebridge_shared.outbox import OutboxTables, move_rows

if TYPE_CHECKING:
    from fastapi import FastAPI

POSTGRES_ENV = "CASEBRIDGE_TEST_POSTGRES_URL"


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def backend_name() -> str:
    return "postgresql" if postgres_url() else "sqlite"


def _pg_dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


class DatabaseTemplates:
    """Migrate once per session, clone per test (file copy or CREATE DATABASE ... TEMPLATE)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self._templates: dict[str, str] = {}
        self._created: list[str] = []

    def template(self, service: str, script_location: Path) -> str:
        if service in self._templates:
            return self._templates[service]
        base = postgres_url()
        if base is None:
            path = self.workdir / f"template-{service}.sqlite3"
            url = f"sqlite+aiosqlite:///{path}"
            migrations.upgrade(script_location, url)
            self._templates[service] = str(path)
        else:
            name = f"cbt_{self.run_id}_{service.replace('-', '_')}_tpl"
            asyncio.run(pg_exec(base, f'CREATE DATABASE "{name}"'))
            self._created.append(name)
            migrations.upgrade(
                script_location, str(make_url(base).set(database=name).render_as_string(hide_password=False))
            )
            self._templates[service] = name
        return self._templates[service]

    async def fresh(self, service: str, script_location: Path, tmp_path: Path) -> str:
        template = await asyncio.to_thread(self.template, service, script_location)
        base = postgres_url()
        if base is None:
            target = tmp_path / f"{service}.sqlite3"
            shutil.copyfile(template, target)
            return f"sqlite+aiosqlite:///{target}"
        name = f"cbt_{self.run_id}_{uuid.uuid4().hex[:12]}"
        await pg_exec(base, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self._created.append(name)
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    async def drop(self, url: str) -> None:
        base = postgres_url()
        if base is None or not url.startswith("postgresql"):
            return
        name = make_url(url).database
        await pg_exec(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        base = postgres_url()
        if base is None:
            return
        for name in reversed(self._created):
            asyncio.run(pg_exec(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def pg_exec(base_url: str, sql: str) -> None:
    """Run one statement on a PostgreSQL server (creating or dropping a database: outside a transaction)."""
    conn = await asyncpg.connect(_pg_dsn(base_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _admin(url: str) -> asyncpg.Connection:
    """A connection to the maintenance database of ``url``'s server (not to the database itself,
    which may be refusing connections)."""
    connection: asyncpg.Connection = await asyncpg.connect(_pg_dsn(url, "postgres"))
    return connection


async def terminate_connections(url: str, *, pid: int | None = None, timeout: float = 10.0) -> int:
    """``pg_terminate_backend`` on every connection to ``url``'s database (or only ``pid``),
    and wait until those backends are gone; returns how many were terminated."""
    name = make_url(url).database
    admin = await _admin(url)
    try:
        if pid is None:
            pids = [
                row[0]
                for row in await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name
                )
            ]
        else:
            pids = [pid]
        await admin.execute("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) AS p", pids)
        # pg_terminate_backend only signals: wait until the backends exited.
        deadline = time.monotonic() + timeout
        while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids):
            if time.monotonic() > deadline:
                raise AssertionError(f"terminated backends of {name} did not exit within {timeout}s")
            await asyncio.sleep(0.01)
        return len(pids)
    finally:
        await admin.close()


async def allow_connections(url: str, allowed: bool) -> None:
    """``ALTER DATABASE .. ALLOW_CONNECTIONS``: while false, new connections to ``url``'s
    database fail with "database .. is not currently accepting connections" (SQLSTATE 55000)."""
    name = make_url(url).database
    admin = await _admin(url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def connections_refused(url: str) -> AsyncIterator[None]:
    """New connections to ``url``'s PostgreSQL database refused while inside; allowed again after."""
    await allow_connections(url, False)
    try:
        yield
    finally:
        await allow_connections(url, True)


@contextlib.asynccontextmanager
async def scratch_database(tmp_path: Path, prefix: str) -> AsyncIterator[Database]:
    """An empty database of the backend under test, for tests that bring their own tables.

    A SQLite file under ``tmp_path``, or with ``CASEBRIDGE_TEST_POSTGRES_URL`` a fresh
    PostgreSQL database ``<prefix>_<random>`` on that server, dropped afterwards.
    """
    base = postgres_url()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    if base is None:
        url = f"sqlite+aiosqlite:///{tmp_path / name}.sqlite3"
    else:
        await pg_exec(base, f'CREATE DATABASE "{name}"')
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()
        if base is not None:
            await pg_exec(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def statements_sent(db: Database) -> Iterator[list[str]]:
    """Every SQL statement ``db`` sends meanwhile (whitespace folded), by either of its engines."""
    sent: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    engines = {db.engine.sync_engine, db.writer_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)


def counting_calls(monkeypatch: Any, obj: Any, name: str) -> list[Any]:
    """Replace the async method ``obj.name`` by one that notes each call's arguments, then calls it.

    For tests that count what code asks the database: the list fills as it is called.
    """
    calls: list[Any] = []
    original = getattr(obj, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await original(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


async def count_rows(db: Database, table: Any, *where: Any) -> int:
    """How many rows of ``table`` (a table or a model) match ``where``, read in a session of its own."""
    async with db.session() as session:
        return int(
            (await session.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        )


async def mark_published(db: Database, tables: OutboxTables, *where: Any, at: datetime | None = None) -> int:
    """Set-up: move the outbox rows matching ``where`` (all without) to published, as the relay does.

    ``at`` is the publication time (now by default), e.g. to age rows past the retention period.
    """
    when = at or utcnow()
    async with db.write_session() as session:
        moved = await move_rows(
            session,
            db.dialect,
            tables.outbox,
            tables.published,
            and_(true(), *where),
            computed={"published_at": lambda _: literal(when, UTCDateTime)},
        )
        await session.commit()
    return moved


async def wait_until(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


async def create_topics(bootstrap_servers: str, *topics: str) -> None:
    """Create topics as a service would (the default partition count), for a test that writes first.

    Our clients never have the broker create a topic on the fly, so a test producer
    writing to a topic no service made yet must make it, as an integrator's would.
    """
    from casebridge_shared.settings import ServiceSettings

    await ensure_topics(ServiceSettings(kafka_bootstrap_servers=bootstrap_servers), topics)


async def publish(bootstrap_servers: str, topic: str, *events: Any, key: str | None = None) -> None:
    """Write CloudEvents (or raw bytes, to test poison messages) to ``topic`` as a producer would.

    Keyed by ``key`` if given (one key keeps them all in order on one partition),
    else by each event's partition key, as our relays do.
    """
    await create_topics(bootstrap_servers, topic)
    producer = guarded_producer(bootstrap_servers, acks="all")
    await producer.start()
    try:
        for event in events:
            raw = isinstance(event, bytes)
            value = event if raw else event.to_bytes()
            record_key = key or ("raw" if raw else (event.partitionkey or event.id))
            await producer.send_and_wait(topic, value=value, key=record_key.encode())
    finally:
        await producer.stop()


class _Runs(Protocol):
    def run(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]: ...


async def consume_until(
    consumer: Callable[[], _Runs],
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 90.0,
    message: str = "consumer progress",
) -> None:
    """Run a fresh consumer until ``condition`` holds (a deadline), then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer().run(stop))
    try:
        await wait_until(condition, timeout=timeout, message=message)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


class TopicReader:
    """Reads a topic from the beginning with a real Kafka consumer and keeps every event."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.consumer = guarded_consumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.events: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.headers: list[dict[str, bytes]] = []
        self.partitions: list[int] = []

    async def __aenter__(self) -> TopicReader:
        # Made now if no service has yet: a reader's lookups do not create it, and it would
        # otherwise only see the topic at its next metadata refresh, minutes later.
        await create_topics(self.bootstrap_servers, self.topic)
        await self.consumer.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.consumer.stop()

    async def poll(self) -> int:
        batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
        count = 0
        for messages in batches.values():
            for message in messages:
                self.events.append(json.loads(message.value))
                self.keys.append(message.key.decode() if message.key else "")
                self.headers.append({k: v for k, v in message.headers})
                self.partitions.append(message.partition)
                count += 1
        return count

    async def read_until(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        async def check() -> bool:
            await self.poll()
            return predicate(self.events)

        await wait_until(check, timeout=timeout, interval=0.0, message=f"events on {self.topic}")
        return self.events

    async def read_to_end(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Read until every assigned partition is consumed up to its current end offset."""
        partitions = self.consumer.assignment()
        ends = await self.consumer.end_offsets(list(partitions))

        async def at_end() -> bool:
            await self.poll()
            for tp, end in ends.items():
                if await self.consumer.position(tp) < end:
                    return False
            return True

        await wait_until(at_end, timeout=timeout, interval=0.0, message=f"end of {self.topic}")
        return self.events


async def reset_group_offsets(bootstrap_servers: str, group: str, topic: str, timeout: float = 30.0) -> None:
    """Set a consumer group's committed offsets back to the start of ``topic``.

    The group must have no running members (stop its consumers first).
    """
    from aiokafka import TopicPartition

    consumer = guarded_consumer(
        topic, bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:

        async def assigned() -> bool:
            await consumer.getmany(timeout_ms=100)
            return bool(consumer.assignment())

        await wait_until(assigned, timeout=timeout, interval=0.0, message=f"assignment for {group}")
        partitions = consumer.partitions_for_topic(topic) or set()
        await consumer.commit({TopicPartition(topic, p): 0 for p in partitions})
    finally:
        await consumer.stop()


class TokenMinter:
    """Signs tokens the way order-intake does, for the tests of the services that only verify them.

    ``verifier()`` is what a test puts on ``app.state.token_verifier`` so the app
    checks the minted tokens for real (signature, issuer, audience, expiry).
    """

    def __init__(self, *, issuer: str = "casebridge-test", audience: str = "casebridge") -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.issuer = issuer
        self.audience = audience
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self._key = Ed25519PrivateKey.generate()

    def token(
        self,
        subject: str,
        *roles: str,
        department: str | None = None,
        name: str | None = None,
        email: str | None = None,
        lifetime_seconds: int = 3600,
    ) -> str:
        import jwt

        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + lifetime_seconds,
            "roles": list(roles),
        }
        for claim, value in (("department", department), ("name", name), ("email", email)):
            if value is not None:
                claims[claim] = value
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.kid})

    def headers(self, subject: str, *roles: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, *roles, **kw)}"}

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWKS document, for a service in another process to verify against."""
        from jwt.algorithms import OKPAlgorithm

        key = json.loads(OKPAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**key, "kid": self.kid, "use": "sig", "alg": "EdDSA"}]}

    def verifier(self) -> Any:
        from casebridge_shared.auth import KeyResolverVerifier

        public = self._key.public_key()

        async def resolve(kid: str) -> Any:
            return public if kid == self.kid else None

        return KeyResolverVerifier(resolve, issuer=self.issuer, audience=self.audience)


class ApiServer:
    """An app served by uvicorn on a real port: for streams (SSE) and for one service calling another.

    It can be stopped and started again on the same port, like a restarted api process.
    """

    def __init__(
        self,
        make_app: Callable[[], FastAPI],
        port: int,
        *,
        lifespan: bool = True,
        shutdown_grace_seconds: int | None = None,
    ) -> None:
        self.make_app = make_app
        self.port = port
        # As ``<service> api`` (settings.shutdown_grace_seconds): then open streams are cancelled.
        self.shutdown_grace_seconds = shutdown_grace_seconds
        # False for an app whose lifespan the test already runs (e.g. a service's ``app`` fixture).
        self.lifespan = lifespan
        self.url = f"http://127.0.0.1:{port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self.make_app(),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on" if self.lifespan else "off",
            access_log=False,
            proxy_headers=False,  # as ``<service> api`` runs it: the app decides (trusted_proxies)
            timeout_graceful_shutdown=self.shutdown_grace_seconds,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise AssertionError("api failed to start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=30)
        self._server = self._task = None


def assert_security_headers(response: Any, *, page: bool = False) -> None:
    """The headers every answer carries (web.SecurityHeadersMiddleware); ``page``: an HTML page's
    policy (scripts from this origin or by hash, never 'unsafe-inline'), else the API/download one."""
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff", response.request.url
    assert headers["x-frame-options"] == "DENY", response.request.url
    assert headers["referrer-policy"] in ("no-referrer", "strict-origin-when-cross-origin")
    policy = {
        directive.split(" ", 1)[0]: directive.partition(" ")[2]
        for directive in (part.strip() for part in headers["content-security-policy"].split(";"))
    }
    assert policy["frame-ancestors"] == "'none'", policy
    if page:
        assert "'unsafe-inline'" not in policy["script-src"] and "*" not in policy["script-src"], policy
    else:
        assert policy["default-src"] == "'none'" and "sandbox" in policy, policy


DOCS_PAGES = ("/docs", "/docs/oauth2-redirect", "/redoc")


async def assert_docs_pages_offline(client: Any) -> None:
    """``/docs``, its OAuth2 redirect page and ``/redoc`` reference only this service's own files
    (issue 26: no CDN, they work offline), each of them is served, and the pages' policy allows
    scripts from 'self' only and no other origin at all."""
    for path in DOCS_PAGES:
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert_security_headers(page, page=True)
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy, policy
        assert not re.search(r"https?:|\*", policy), policy
        assert not re.search(r"(?i)https?:|//[a-z0-9]", page.text), page.text  # no other origin named
        references = re.findall(r"""(?:src|href)=["']([^"']*)["']""", page.text)
        assert any(r.startswith("/docs-assets/") for r in references), page.text
        for reference in references:
            if reference.startswith("data:"):
                continue
            assert reference.startswith("/docs-assets/"), reference
            asset = await client.get(reference)
            assert asset.status_code == 200 and len(asset.content) > 0, reference
            assert asset.headers["content-type"].startswith(("text/javascript", "text/css")), reference


def metric_samples(exposition: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a ``/metrics`` answer: (sample name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    ]


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none):
    counters are process-wide, so tests compare a value before and after what they drive."""
    return sum(
        value
        for sample, found, value in metric_samples(exposition)
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    )
