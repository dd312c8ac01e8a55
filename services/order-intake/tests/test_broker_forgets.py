"""A broker that loses what it acknowledged: the relay notices and sends it again (issue 25, 1).

The embedded broker keeps nothing on disk; killed and started again it is empty,
with a new cluster id. Nothing an operator has to do.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError
from prometheus_client import REGISTRY
from sqlalchemy import select

from casebridge_shared import health
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.events import ORDERS_TOPIC
from casebridge_shared.kafka import guarded_consumer, guarded_producer, make_admin
from casebridge_shared.outbox import relay_status
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.testing import TopicReader, wait_until
from casebridge_shared.worker import operations_app
from order_intake.bootstrap import Container
from order_intake.db import outbox

from .conftest import Factory
from .test_relay import _all_event_ids, _principal, kafka_bootstrap, running_relay  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


async def _place(container: Container, factory: Factory, count: int) -> None:
    from order_intake.orders import service as orders
    from order_intake.orders.models import OrderCreate

    customer = await factory.customer()
    product = await factory.product()
    principal = _principal(customer.id)
    for i in range(count):
        async with container.uow() as uow:
            await orders.place_order(
                uow, principal, OrderCreate(product_id=product.id, description=f"n{i}"), None
            )


async def _published(container: Container) -> bool:
    return (await relay_status(container.db, outbox, runs=0)).backlog == 0


async def _read_all(broker: EmbeddedBroker, expected: set[str]) -> set[str]:
    async with TopicReader(broker.bootstrap_servers, ORDERS_TOPIC) as reader:
        await reader.read_until(lambda events: expected <= {e["id"] for e in events}, timeout=120)
        return {e["id"] for e in reader.events}


def _resets() -> float:
    return (
        REGISTRY.get_sample_value(
            "casebridge_broker_resets_total", {"service": "order-intake", "component": "relay"}
        )
        or 0.0
    )


async def test_a_running_relay_sends_everything_again_to_a_broker_that_came_back_empty(
    factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    resets = _resets()
    async with running_relay(container):
        await _place(container, factory, 30)
        await wait_until(lambda: _published(container), timeout=60, message="first orders published")
        before = set(await _all_event_ids(container, ORDERS_TOPIC))
        assert await _read_all(broker, before) >= before
        broker.kill()
        broker.start()  # same port, nothing in it, a new cluster id
        await _place(container, factory, 10)
        expected = set(await _all_event_ids(container, ORDERS_TOPIC))
        assert len(expected) == 40
        # Every event the old broker had acknowledged is on the new one, and the new ones too.
        assert await _read_all(broker, expected) == expected
        await wait_until(lambda: _published(container), timeout=60, message="outbox published again")
    assert _resets() >= resets + 1
    async with container.db.session() as s:
        errors = (await s.execute(select(outbox.relay_runs.c.error))).scalars().all()
    assert any(e and e.startswith("broker reset:") for e in errors), errors


async def test_a_relay_started_against_an_emptied_broker_heals_before_it_sends(
    factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    """A whole stack stopped and started again: the new broker has none of what went out."""
    async with running_relay(container):
        await _place(container, factory, 20)
        await wait_until(lambda: _published(container), timeout=60, message="orders published")
    broker.kill()
    broker.start()
    expected = set(await _all_event_ids(container, ORDERS_TOPIC))
    async with running_relay(container):
        assert await _read_all(broker, expected) == expected


async def test_a_topic_with_another_partition_count_halts_the_relay_loudly(
    factory: Factory, container: Container, broker: EmbeddedBroker
) -> None:
    from aiokafka.admin import NewTopic

    admin = make_admin(container.settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ORDERS_TOPIC, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    await _place(container, factory, 3)
    problems: dict[str, str] = {}
    async with running_relay(container):
        await wait_until(lambda: bool(health.WORKER.problems()), timeout=60, message="the relay reports")
        problems = health.WORKER.problems()
        halted = REGISTRY.get_sample_value("casebridge_relay_halted", {"service": "order-intake"})
        assert halted == 1
        # The worker's operations port says it is not ready, and why.
        answers: list[str] = []
        body = b"".join(
            operations_app(health.WORKER)(
                {"PATH_INFO": "/readyz"}, lambda status, _headers: answers.append(status)
            )
        )
        assert answers == ["503 Service Unavailable"] and b"4 partitions" in body
    assert "4 partitions where 6 are configured" in next(iter(problems.values()))
    status = await relay_status(container.db, outbox)
    async with container.db.session() as s:
        sent = (await s.execute(select(outbox.published.c.event_id))).scalars().all()
    assert sent == [] and status.backlog >= 3  # nothing was sent, to any topic
    assert any("4 partitions" in (r["error"] or "") for r in status.last_runs)
    health.WORKER.clear(next(iter(problems)))


async def test_our_clients_never_have_the_broker_create_a_topic(
    broker: EmbeddedBroker,
) -> None:
    consumer = guarded_consumer("casebridge.nobody.v1", bootstrap_servers=broker.bootstrap_servers)
    producer = guarded_producer(broker.bootstrap_servers)
    try:
        # A reader of a topic nobody made yet is told so, and does not make it.
        with pytest.raises(UnknownTopicOrPartitionError):
            await consumer.start()
        await producer.start()
        with pytest.raises((asyncio.TimeoutError, UnknownTopicOrPartitionError)):
            await asyncio.wait_for(producer.partitions_for("casebridge.nobody-either.v1"), timeout=2)
    finally:
        await consumer.stop()
        await producer.stop()
    admin = make_admin(ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers))
    await admin.start()
    try:
        topics = await admin.list_topics()
    finally:
        await admin.close()
    assert not [t for t in topics if "nobody" in t]
