"""Issue 25: login throttling per account and per client address, with growing delays."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from casebridge_shared.db import table_of, utcnow
from casebridge_shared.problems import TooManyRequests
from casebridge_shared.testing import count_rows
from order_intake.bootstrap import Container, bootstrap
from order_intake.db import outbox
from order_intake.identity import throttle
from order_intake.identity.models import LoginThrottle, User
from order_intake.main import create_application
from order_intake.settings import Settings

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"
ACCOUNT_LIMIT, ADDRESS_LIMIT = 5, 8


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"login_failures_per_account": ACCOUNT_LIMIT, "login_failures_per_address": ADDRESS_LIMIT}
    )


def _client(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://order-intake")


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/auth/token", data={"username": email, "password": password})


async def _throttled_count(client: httpx.AsyncClient, scope: str) -> float:
    text = (await client.get("/metrics")).text
    pattern = rf'^casebridge_login_throttled_total\{{scope="{scope}",service="order-intake"\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _assert_throttled(response: httpx.Response, *, at_most: int) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= at_most
    assert response.json()["retry_after"] == retry_after
    assert response.json()["detail"] == throttle.THROTTLED
    return retry_after


@pytest.fixture
async def second_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """Another api process on the same database: its own container, engine and memory."""
    other: Container = bootstrap(settings)
    await other.keys.load()
    application = create_application(settings, other)
    async with application.router.lifespan_context(application):
        yield application
    await other.close()


async def test_wrong_passwords_throttle_the_account_across_processes_until_a_block_ends(
    client: httpx.AsyncClient, second_app: FastAPI, factory: Factory, container: Container
) -> None:
    user = await factory.customer()
    throttled_before = await _throttled_count(client, "account")
    for _ in range(ACCOUNT_LIMIT):
        assert (await _login(client, user.email, "not-the-password")).status_code == 401
    # Even the right password waits now, on any api process (the count is in the database).
    async with _client(second_app, "127.0.0.1") as other:
        _assert_throttled(await _login(other, user.email, PASSWORD), at_most=30)
    _assert_throttled(await _login(client, user.email.upper(), PASSWORD), at_most=30)
    assert await _throttled_count(client, "account") == throttled_before + 2
    # Throttled attempts are on record like other failed logins, never with the password.
    async with container.db.session() as s:
        payloads = (await s.execute(select(outbox.outbox.c.payload))).scalars().all()
    assert sum('"reason":"throttled"' in p for p in payloads) == 2
    assert all(PASSWORD not in p and "not-the-password" not in p for p in payloads)

    # The block ends (as if its 30 s had passed): the right password works and resets the count.
    table = table_of(LoginThrottle)
    async with container.db.write_session() as s:
        await s.execute(update(table).values(blocked_until=utcnow() - timedelta(seconds=1)))
        await s.commit()
    assert (await _login(client, user.email, PASSWORD)).status_code == 200
    async with container.db.session() as s:
        keys = (await s.execute(select(table.c.key))).scalars().all()
    assert throttle.account_key(user.email) not in keys
    assert (await _login(client, user.email, "not-the-password")).status_code == 401


async def test_a_parallel_burst_is_counted_in_full(client: httpx.AsyncClient, factory: Factory) -> None:
    """Attempts are counted before the password is checked: a burst gets no more guesses."""
    user = await factory.customer()
    burst = await asyncio.gather(*(_login(client, user.email, f"guess-{n}-guess") for n in range(12)))
    statuses = sorted(r.status_code for r in burst)
    assert statuses == [401] * ACCOUNT_LIMIT + [429] * (12 - ACCOUNT_LIMIT)


async def test_an_unknown_email_is_throttled_like_a_known_one(client: httpx.AsyncClient) -> None:
    for _ in range(ACCOUNT_LIMIT):
        assert (await _login(client, "nobody@example.org", "whatever-pass")).status_code == 401
    _assert_throttled(await _login(client, "nobody@example.org", "whatever-pass"), at_most=30)


async def test_many_accounts_from_one_address_throttle_that_address_only(
    app: FastAPI, factory: Factory
) -> None:
    user = await factory.customer()
    async with _client(app, "203.0.113.7") as attacker, _client(app, "198.51.100.1") as owner:
        throttled_before = await _throttled_count(attacker, "address")
        for n in range(ADDRESS_LIMIT):
            assert (await _login(attacker, f"guess{n}@example.org", "whatever-pass")).status_code == 401
        _assert_throttled(await _login(attacker, user.email, PASSWORD), at_most=30)
        assert await _throttled_count(attacker, "address") == throttled_before + 1
        # The account itself was never guessed at: its owner elsewhere signs in.
        assert (await _login(owner, user.email, PASSWORD)).status_code == 200


async def test_delays_double_up_to_the_cap_and_old_failures_are_forgotten(container: Container) -> None:
    policy = throttle.ThrottlePolicy(
        failures_per_account=5,
        failures_per_address=50,
        window=timedelta(minutes=15),
        block=timedelta(seconds=30),
        max_block=timedelta(minutes=5),
    )
    keys = throttle.keys_for("victim@example.org", "192.0.2.1")
    start = utcnow()

    async def attempt(at_seconds: float) -> int | None:
        """None if the attempt was counted, else its Retry-After."""
        async with container.uow() as uow:
            try:
                await throttle.count_attempt(uow.session, policy, keys, start + timedelta(seconds=at_seconds))
            except TooManyRequests as exc:
                return int(exc.headers["Retry-After"])
            await uow.commit()
            return None

    for n in range(5):
        assert await attempt(n) is None
    # The 5th failure (at t=4) blocks for 30 s; each later failure doubles it, up to 300 s.
    t, retries = 4.0, []
    for _ in range(5):
        retry = await attempt(t + 1)
        assert retry is not None
        retries.append(retry)
        t += 1 + retry  # the first moment the block is over
        assert await attempt(t) is None  # counted: the next failure
    assert retries == [29, 59, 119, 239, 299]
    # Quiet for longer than the window: the count starts again, nothing is blocked.
    assert await attempt(t + 15 * 60 + 1) is None
    assert await attempt(t + 15 * 60 + 2) is None


def test_block_lengths() -> None:
    policy = throttle.ThrottlePolicy(
        failures_per_account=5, block=timedelta(seconds=30), max_block=timedelta(minutes=5)
    )
    lengths = [policy.block_for(n, 5) for n in range(1, 11)]
    assert lengths[:4] == [None] * 4
    assert [b.total_seconds() for b in lengths[4:] if b is not None] == [30, 60, 120, 240, 300, 300]
    assert policy.block_for(10_000, 5) == timedelta(minutes=5)


async def test_sign_ups_of_taken_emails_count_against_the_address(
    app: FastAPI, factory: Factory, container: Container
) -> None:
    taken = await factory.customer()
    body = {"password": PASSWORD, "full_name": "Someone"}
    async with _client(app, "203.0.113.9") as prober, _client(app, "198.51.100.2") as other:
        # New accounts do not count: a busy office signs many people up.
        for n in range(ADDRESS_LIMIT + 2):
            r = await prober.post("/auth/register", json=body | {"email": f"new{n}@example.org"})
            assert r.status_code == 201, r.text
        for _ in range(ADDRESS_LIMIT):
            r = await prober.post("/auth/register", json=body | {"email": taken.email})
            assert r.status_code == 409 and r.json()["errors"][0]["field"] == "body.email"
        users = await count_rows(container.db, User)
        _assert_throttled(
            await prober.post("/auth/register", json=body | {"email": "fresh@example.org"}), at_most=30
        )
        _assert_throttled(await _login(prober, taken.email, PASSWORD), at_most=30)
        assert await count_rows(container.db, User) == users  # nothing half-written
        elsewhere = await other.post("/auth/register", json=body | {"email": "fresh@example.org"})
        assert elsewhere.status_code == 201


async def test_a_failed_login_with_the_longest_unknown_email_is_a_401(
    client: httpx.AsyncClient, container: Container
) -> None:
    # Its login-failed event is keyed by the email: the key must still fit the outbox
    # (PostgreSQL refused it, a 500; found by the fuzz test).
    email = "x" * 300 + "@example.org"
    r = await _login(client, email, "wrong-password")
    assert r.status_code == 401, r.text
    async with container.db.session() as session:
        keys = (await session.execute(select(outbox.outbox.c.message_key))).scalars().all()
    assert any(k.startswith("email:xxx") and len(k) <= 200 for k in keys), keys
