"""Issue 25: nothing lost, nobody in. PostgreSQL goes away under load and both platforms ride it out.

Orders arrive through order-intake's HTTP api at ~20/s for 40 s while every
connection to order-intake's and case-handling's databases is terminated twice
(``pg_terminate_backend``) and new connections are refused for 10 s (``ALTER
DATABASE .. ALLOW_CONNECTIONS false``). The client does what a real one does: a
503 is tried again after its ``Retry-After`` with the same ``Idempotency-Key``.
Then: no answer was a 500, both workers still run, and every accepted order has
exactly one case.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
import structlog
from sqlalchemy import text

from casebridge_shared import testing
from casebridge_shared.db import Database

from .conftest import Stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        testing.postgres_url() is None,
        reason="terminates and refuses PostgreSQL connections (run with CASEBRIDGE_TEST_POSTGRES_URL)",
    ),
]

log = structlog.get_logger(__name__)

RATE = 20.0  # orders per second
SECONDS = 40.0
# Relative to the start of the load: terminate, refuse (10 s) and terminate, terminate again.
FIRST_TERMINATION, REFUSED_FROM, REFUSED_SECONDS, SECOND_TERMINATION = 5.0, 12.0, 10.0, 28.0


@dataclass
class Tally:
    accepted: set[str] = field(default_factory=set)
    answers: Counter[int] = field(default_factory=Counter)
    unavailable_without_retry_after: int = 0
    timed_out: int = 0
    gave_up: int = 0
    errors: list[str] = field(default_factory=list)


async def _order(customer: httpx.AsyncClient, product_id: str, tally: Tally, deadline: float) -> None:
    """One order, tried again on a 503 (after its Retry-After) with the same Idempotency-Key."""
    key = str(uuid.uuid4())
    body = {"product_id": product_id, "description": "Is my non-compete valid?"}
    while True:
        try:
            r = await customer.post("/orders", json=body, headers={"Idempotency-Key": key}, timeout=60)
        except httpx.TimeoutException:
            # Slow, not refused (a loaded machine): a real client tries again with the same key.
            tally.timed_out += 1
            if time.monotonic() > deadline:
                tally.gave_up += 1
                return
            continue
        except httpx.TransportError as exc:  # the api itself must stay up: counted, not retried away
            tally.errors.append(f"{type(exc).__name__}: {exc}")
            return
        tally.answers[r.status_code] += 1
        if r.status_code in (200, 201):
            tally.accepted.add(str(r.json()["id"]))
            return
        if r.status_code != 503:
            tally.errors.append(f"{r.status_code}: {r.text[:300]}")
            return
        if "retry-after" not in r.headers:
            tally.unavailable_without_retry_after += 1
        if time.monotonic() > deadline:
            tally.gave_up += 1
            return
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))


async def _outage(urls: list[str], started: float) -> list[str]:
    """The faults, on schedule; returns what was done, for the test's message."""
    done: list[str] = []

    async def at(offset: float) -> None:
        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))

    await at(FIRST_TERMINATION)
    counts = [await testing.terminate_connections(url) for url in urls]
    done.append(f"terminated {counts}")
    await at(REFUSED_FROM)
    for url in urls:
        await testing.allow_connections(url, False)
    try:
        counts = [await testing.terminate_connections(url) for url in urls]
        done.append(f"refused, terminated {counts}")
        await at(REFUSED_FROM + REFUSED_SECONDS)
    finally:
        for url in urls:
            await testing.allow_connections(url, True)
    done.append("allowed again")
    await at(SECOND_TERMINATION)
    counts = [await testing.terminate_connections(url) for url in urls]
    done.append(f"terminated {counts}")
    return done


async def test_orders_keep_flowing_through_a_postgresql_outage_and_none_is_lost(stack: Stack) -> None:
    customer = await stack.register_customer("outage@example.com")
    product_id = await stack.product()
    intake_url, cases_url = stack.intake.settings.database_url, stack.cases.settings.database_url

    tally = Tally()
    started = time.monotonic()
    outage = asyncio.create_task(_outage([intake_url, cases_url], started))
    orders: list[asyncio.Task[None]] = []
    count = int(RATE * SECONDS)
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
        orders.append(asyncio.create_task(_order(customer, product_id, tally, started + SECONDS + 60)))
    await asyncio.gather(*orders)
    done = await outage
    log.info("outage.load_done", seconds=round(time.monotonic() - started, 1), faults=done)

    # The workers rode it out: their tasks are still running.
    for platform in (stack.intake, stack.cases):
        task = platform.worker._task
        assert task is not None and not task.done(), f"a worker ended: {task}"

    cases = Database(cases_url)
    try:
        found: dict[str, int] = {}

        async def every_order_has_its_case() -> bool:
            async with cases.session() as session:
                rows = await session.execute(
                    text("SELECT order_id, count(*) FROM cases WHERE order_id = ANY(:ids) GROUP BY order_id"),
                    {"ids": sorted(tally.accepted)},
                )
                found.clear()
                found.update({str(order_id): int(n) for order_id, n in rows})
            return len(found) == len(tally.accepted)

        with_cases_by = None
        try:
            await testing.wait_until(
                every_order_has_its_case, timeout=120, interval=0.5, message="every case"
            )
            with_cases_by = round(time.monotonic() - started, 1)
        except AssertionError:
            pass
    finally:
        await cases.dispose()

    lost = len(tally.accepted) - len(found)
    duplicated = sum(1 for n in found.values() if n > 1)
    figures = {
        "orders_sent": count,
        "accepted": len(tally.accepted),
        "answers": dict(sorted(tally.answers.items())),
        "timed_out_and_retried": tally.timed_out,
        "gave_up": tally.gave_up,
        "lost": lost,
        "duplicated": duplicated,
        "all_cases_by_seconds": with_cases_by,
        "faults": done,
    }
    log.info("outage.figures", **figures)
    print(f"\noutage figures: {figures}")
    assert tally.answers[500] == 0, figures
    assert not tally.errors, (tally.errors[:5], figures)
    assert tally.unavailable_without_retry_after == 0, figures
    assert tally.gave_up == 0, figures
    assert len(tally.accepted) == count, figures
    assert lost == 0 and duplicated == 0, figures
    for platform in (stack.intake, stack.cases):
        task = platform.worker._task
        assert task is not None and not task.done(), f"a worker ended: {task}"
