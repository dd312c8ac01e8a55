"""The worker's consumer of casebridge.orders.v1 / catalog.v1 and its relay, against a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from case_handling.bootstrap import CONSUMER_GROUP, Container
from case_handling.cases import service as case_service
from case_handling.cases.models import Case, CaseEntry, CatalogProduct
from case_handling.db import inbox, outbox
from case_handling.intake.events import (
    ORDER_CANCELLED,
    ORDER_PLACED,
    ORDER_UPDATED,
    PRODUCT_UPDATED,
    OrderState,
)
from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.events import CASES_TOPIC, CATALOG_TOPIC, ORDERS_TOPIC, CloudEvent
from casebridge_shared.inbox import dead_letter_topic, list_dead_letters
from casebridge_shared.kafka import guarded_producer
from casebridge_shared.outbox import relay_status
from casebridge_shared.testing import count_rows, create_topics

OrderEvent = Callable[..., CloudEvent]


async def publish(
    broker: EmbeddedBroker, topic: str, *events: CloudEvent | bytes, key: str | None = None
) -> None:
    """``key``: one key for all, so they share a partition and arrive in this order."""
    await create_topics(broker.bootstrap_servers, topic)
    producer = guarded_producer(broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for event in events:
            if isinstance(event, bytes):
                await producer.send_and_wait(topic, value=event, key=(key or "poison").encode())
            else:
                await producer.send_and_wait(
                    topic, value=event.to_bytes(), key=(key or event.partitionkey).encode()
                )
    finally:
        await producer.stop()


async def run_worker_until(
    container: Container, condition: Callable[[], Awaitable[bool]], timeout: float = 90
) -> None:
    """The worker's two loops, as ``case-handling worker`` runs them, until ``condition`` holds."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(container.consumer().run(stop)),
        asyncio.create_task(container.relay().run(stop)),
    ]
    try:
        await testing.wait_until(condition, timeout=timeout, message="worker progress")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def cases(container: Container) -> list[Case]:
    async with container.db.session() as s:
        return list((await s.execute(select(Case).order_by(Case.created_at))).scalars())


def order_event(order_id: str, type_: str = ORDER_PLACED, version: int = 1, **data: Any) -> CloudEvent:
    now = datetime.now(UTC).isoformat()
    payload: dict[str, Any] = {
        "order_id": order_id,
        "customer": {
            "customer_id": "cust-1",
            "full_name": "Ada Lovelace",
            "email": "ada@example.org",
            "phone": None,
        },
        "product": {
            "product_id": "prod-1",
            "title": "Employment contract check",
            "description": "We check your contract.",
            "deliverables": ["Review"],
            "category": "employment",
            "price": "99.00",
            "currency": "EUR",
            "version": 1,
        },
        "description": "Is my non-compete clause valid?",
        "status": "submitted",
        "version": version,
        "created_at": now,
        "updated_at": now,
        "a_field_added_later": {"consumers": "ignore it"},
    }
    payload.update(data)
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake",
        type=type_,
        time=datetime.now(UTC),
        partitionkey=order_id,
        aggregateversion=version,
        data=payload,
    )


async def test_orders_become_cases_once_and_case_events_go_out(
    broker: EmbeddedBroker, container: Container
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    ids = [str(uuid.uuid4()) for _ in range(5)]
    await publish(broker, ORDERS_TOPIC, *(order_event(i) for i in ids))

    async def five_cases_published() -> bool:
        # Cases first: their outbox rows commit with them, so a backlog read after
        # seeing five cases includes those rows until they are published. Read the
        # other way round, a commit landing between the two reads looked "published".
        if len(await cases(container)) != 5:
            return False
        return (await relay_status(container.db, outbox, runs=0)).backlog == 0

    await run_worker_until(container, five_cases_published)
    made = await cases(container)
    assert sorted(c.order_id for c in made) == sorted(ids)
    first = next(c for c in made if c.order_id == ids[0])
    assert first.product_title == "Employment contract check" and first.price == "99.00"
    assert first.customer["email"] == "ada@example.org" and first.status == "new"

    async with testing.TopicReader(broker.bootstrap_servers, CASES_TOPIC) as reader:
        opened = await reader.read_until(lambda events: len(events) >= 5, timeout=60)
    assert sorted(e["data"]["order_id"] for e in opened) == sorted(ids)
    assert {e["type"] for e in opened} == {"casebridge.cases.case-opened.v1"}

    # An operator resets the group to the start of the topic: nothing happens twice.
    await testing.reset_group_offsets(broker.bootstrap_servers, CONSUMER_GROUP, ORDERS_TOPIC)
    late = str(uuid.uuid4())
    await publish(broker, ORDERS_TOPIC, order_event(late))

    async def six_cases() -> bool:
        return len(await cases(container)) == 6

    await run_worker_until(container, six_cases)
    assert await count_rows(container.db, CaseEntry, CaseEntry.kind == "opened") == 6
    assert await count_rows(container.db, inbox.inbox, inbox.inbox.c.consumer_group == CONSUMER_GROUP) == 6


async def test_updates_cancellations_stale_versions_and_the_catalog(
    broker: EmbeddedBroker, container: Container
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    product = {
        "product_id": "prod-1",
        "title": "Employment contract check",
        "description": "We check your contract, now with a call.",
        "deliverables": ["Review", "Call"],
        "category": "employment",
        "price": "119.00",
        "currency": "EUR",
        "attributes": {},
        "active": True,
        "archived": False,
        "version": 2,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    await publish(
        broker,
        ORDERS_TOPIC,
        order_event(a),
        order_event(a, ORDER_UPDATED, 3, description="Updated: also my notice period."),
        order_event(a, ORDER_UPDATED, 2, description="An older edit that arrived late."),
        order_event(b),
        order_event(
            b, ORDER_CANCELLED, 2, status="cancelled", reason="changed my mind", cancelled_by="cust-1"
        ),
    )
    await publish(
        broker,
        CATALOG_TOPIC,
        CloudEvent(
            id=str(uuid.uuid4()),
            source="/casebridge/order-intake",
            type=PRODUCT_UPDATED,
            time=datetime.now(UTC),
            partitionkey="prod-1",
            aggregateversion=2,
            data=product,
        ),
    )

    async def settled() -> bool:
        made = {c.order_id: c for c in await cases(container)}
        async with container.db.session() as s:
            copy = await s.get(CatalogProduct, "prod-1")
        return (
            a in made
            and made[a].description.startswith("Updated")
            and b in made
            and made[b].status == "cancelled"
            and copy is not None
            and await count_rows(container.db, inbox.inbox) == 6
        )

    await run_worker_until(container, settled)
    made = {c.order_id: c for c in await cases(container)}
    assert made[a].description == "Updated: also my notice period."  # the stale edit was ignored
    assert made[a].order_version == 3
    assert made[b].cancelled_at is not None
    async with container.db.session() as s:
        copy = await s.get(CatalogProduct, "prod-1")
    assert copy is not None and copy.price == "119.00" and copy.deliverables == ["Review", "Call"]


async def test_poison_events_are_dead_lettered_and_the_next_one_applied(
    broker: EmbeddedBroker, container: Container
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    good = str(uuid.uuid4())
    wrong_schema = order_event(str(uuid.uuid4()))
    wrong_schema.data.pop("customer")
    future = order_event(str(uuid.uuid4()), "casebridge.orders.order-placed.v2")
    crashing = order_event(str(uuid.uuid4()), description=None)  # type: ignore[arg-type]
    await publish(
        broker,
        ORDERS_TOPIC,
        b"\xff not json",
        json.dumps({"specversion": "1.0"}).encode(),
        wrong_schema,
        future,
        crashing,
        order_event(good),
        key="one-partition",
    )

    async def good_applied() -> bool:
        return any(c.order_id == good for c in await cases(container))

    await run_worker_until(container, good_applied)
    letters = await list_dead_letters(container.db, inbox, CONSUMER_GROUP)
    errors = [row["error"] for row in letters]
    assert len(letters) == 5, errors
    assert errors[0].startswith("invalid JSON")
    assert errors[1].startswith("not a CloudEvent")
    assert errors[2].startswith("payload does not match") and "customer" in errors[2]
    assert "unknown version of casebridge.orders.order-placed" in errors[3]
    assert errors[4].startswith("payload does not match") and "description" in errors[4]
    assert [c.order_id for c in await cases(container)] == [good]
    assert {row["topic"] for row in letters} == {ORDERS_TOPIC}
    assert dead_letter_topic(CONSUMER_GROUP) == "casebridge.dlq.case-handling"


async def test_two_workers_split_the_partitions_and_a_rebalance_applies_each_order_once(
    broker: EmbeddedBroker, container: Container
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    await publish(broker, ORDERS_TOPIC, *(order_event(i) for i in ids[:500]))
    stop = asyncio.Event()
    first = asyncio.create_task(container.consumer().run(stop))
    second: asyncio.Task[None] | None = None
    try:

        async def some_applied() -> bool:
            return await count_rows(container.db, Case) >= 100

        await testing.wait_until(some_applied, timeout=90, message="first worker under way")
        # A second worker joins the group mid-stream: the partitions are rebalanced.
        second = asyncio.create_task(container.consumer().run(stop))
        await publish(broker, ORDERS_TOPIC, *(order_event(i) for i in ids[500:]))

        async def all_applied() -> bool:
            return await count_rows(container.db, Case) == 1000

        await testing.wait_until(all_applied, timeout=180, message="1,000 cases")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(first, *([second] if second else [])), timeout=60)
    assert await count_rows(container.db, Case) == 1000
    assert await count_rows(container.db, CaseEntry, CaseEntry.kind == "opened") == 1000
    assert await count_rows(container.db, inbox.inbox) == 1000
    async with container.db.session() as s:
        orders = set((await s.execute(select(Case.order_id))).scalars())
    assert orders == set(ids)


async def test_a_case_opened_earlier_in_the_same_transaction_is_found_without_the_database(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of one order's events: placed, then updated, then cancelled, applied in one unit of work."""
    order_id = str(uuid.uuid4())
    placed = OrderState.model_validate(order_event(order_id).data)
    updated = OrderState.model_validate(order_event(order_id, version=2, description="Also my notice.").data)
    async with container.uow() as uow:
        opened = await case_service.open_case(uow, placed, 1)
        assert opened is not None
        queries = testing.counting_calls(monkeypatch, uow.session, "exec")
        assert await case_service.open_case(uow, placed, 1) is None  # a second copy: no second case
        case = await case_service.update_from_order(uow, updated, 2)
        assert case is not None and case.id == opened  # the queued row, taken back as an ORM object
        assert queries == []  # neither asked the database (nor flushed the pending case to do so)
        await uow.commit()
    [case] = await cases(container)
    assert case.id == opened and case.description == "Also my notice." and case.order_version == 2
    async with container.uow() as uow:
        # A later transaction asks the database (and finds it).
        again = await case_service.update_from_order(uow, updated, 2)
        assert again is None  # version 2 already applied


async def test_a_run_of_orders_asks_for_their_cases_once_and_an_order_cancelled_in_it_is_cancelled(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's ``before_run`` finds the run's cases in one query; the handlers ask nothing more."""
    from case_handling.cases.events import CaseCancelled, CaseOpened
    from case_handling.intake import service as intake
    from case_handling.intake.events import PAYLOAD_MODELS

    existing = str(uuid.uuid4())
    async with container.uow() as uow:
        await case_service.open_case(uow, OrderState.model_validate(order_event(existing).data), 1)
        await uow.commit()
    new = [str(uuid.uuid4()) for _ in range(3)]
    run = [order_event(o) for o in [*new, existing]]
    run.append(order_event(new[0], ORDER_CANCELLED, version=2, reason="Found a lawyer nearby"))
    items = [(e, PAYLOAD_MODELS[e.type].model_validate(e.data)) for e in run]
    async with container.uow() as uow:
        queries = testing.counting_calls(monkeypatch, uow.session, "exec")
        await intake.before_run(uow, items)
        assert len(queries) == 1  # the run's cases, all in one query
        for event, payload in items:
            await intake.HANDLERS[event.type](uow, event, payload)
        assert len(queries) == 1  # no handler asked the database again
        await uow.commit()
    by_order = {c.order_id: c for c in await cases(container)}
    assert sorted(by_order) == sorted([*new, existing])  # the existing order got no second case
    assert by_order[new[0]].status == "cancelled" and by_order[new[0]].order_version == 2
    assert {by_order[o].status for o in new[1:]} == {"new"}
    async with container.db.session() as s:
        entries = (await s.execute(select(CaseEntry.case_id, CaseEntry.kind).order_by(CaseEntry.id))).all()
        emitted = list((await s.execute(select(outbox.outbox.c.event_type))).scalars())
    kinds: dict[str, list[str]] = {}
    for case_id, kind in entries:
        kinds.setdefault(case_id, []).append(kind)
    assert kinds[by_order[new[0]].id] == ["opened", "cancelled"]
    assert all(kinds[by_order[o].id] == ["opened"] for o in [*new[1:], existing])
    assert sorted(emitted) == sorted([CaseOpened.event_type] * 4 + [CaseCancelled.event_type])


async def test_events_that_break_the_api_s_limits_the_order_s_history_or_its_owner_are_dead_lettered(
    broker: EmbeddedBroker, container: Container
) -> None:
    """Issue 25: nothing longer than the API allows, no update or cancel of an order never placed,
    no order event from anyone but order-intake; each a dead letter with the reason, nothing stored."""
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    real, never_placed, oversize, last = (str(uuid.uuid4()) for _ in range(4))
    forged_cancel = order_event(real, ORDER_CANCELLED, 2, status="cancelled", reason="forged")
    forged_cancel = forged_cancel.model_copy(update={"source": "/casebridge/notifier"})
    other_customer = order_event(real, ORDER_UPDATED, 3, description="Someone else's order")
    other_customer.data["customer"] = {**other_customer.data["customer"], "customer_id": "cust-2"}
    await publish(
        broker,
        ORDERS_TOPIC,
        order_event(real),
        forged_cancel,
        other_customer,
        order_event(never_placed, ORDER_UPDATED, 2, description="An update out of nowhere"),
        order_event(never_placed, ORDER_CANCELLED, 3, status="cancelled", reason=None, cancelled_by="x"),
        order_event(oversize, description="x" * 20_001),
        order_event(oversize, ORDER_UPDATED, 2, product={"title": "t" * 201}),
        order_event(last),
        key="one-partition",
    )

    async def all_seen() -> bool:
        return any(c.order_id == last for c in await cases(container))

    await run_worker_until(container, all_seen)
    errors = [row["error"] for row in await list_dead_letters(container.db, inbox, CONSUMER_GROUP)]
    assert len(errors) == 6, errors
    assert errors[0] == (
        "event type casebridge.orders.order-cancelled.v1 from source /casebridge/notifier; "
        "only /casebridge/order-intake may publish it"
    )
    assert errors[1] == (
        f"does not fit the order's history: order-updated for order {real} of customer cust-2, "
        "but it was placed by customer cust-1"
    )
    for error, what in zip(errors[2:4], ("order-updated", "order-cancelled"), strict=True):
        assert error == (
            f"does not fit the order's history: {what} for order {never_placed}, "
            "which was never placed here (no case for it)"
        )
    assert errors[4].startswith("payload does not match") and "description" in errors[4]
    assert "at most 20000 characters" in errors[4]
    assert errors[5].startswith("payload does not match") and "product.title" in errors[5]
    by_order = {c.order_id: c for c in await cases(container)}
    assert sorted(by_order) == sorted([real, last])  # nothing opened for the rest
    assert by_order[real].status == "new" and by_order[real].order_version == 1  # not cancelled


async def test_an_order_whose_placed_event_was_dead_lettered_is_whole_after_replaying_its_letters(
    broker: EmbeddedBroker, container: Container
) -> None:
    """Events of one order come in order, and so does a replay of its dead letters (oldest first)."""
    from casebridge_shared.inbox import replay_dead_letter

    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    order_id = str(uuid.uuid4())
    placed = order_event(order_id)
    # A placed event that a bug of this consumer could not apply, and the update behind it.
    placed.data["customer"] = {**placed.data["customer"], "phone": "+49 " + "1" * 40}
    updated = order_event(order_id, ORDER_UPDATED, 2, description="Also my notice period.")
    await publish(broker, ORDERS_TOPIC, placed, updated, order_event(str(uuid.uuid4())), key="k")

    async def one_case() -> bool:
        return len(await cases(container)) == 1

    await run_worker_until(container, one_case)
    letters = await list_dead_letters(container.db, inbox, CONSUMER_GROUP)
    assert [row["event_type"] for row in letters] == [ORDER_PLACED, ORDER_UPDATED]
    assert "customer.phone" in letters[0]["error"]
    assert "never placed here" in letters[1]["error"]
    # Replaying them in order once the cause is fixed (here: the letters themselves are mended;
    # in life, a consumer release) opens the case and applies the update.
    consumer = container.consumer()
    async with container.db.write_session() as s:
        for row in letters:
            event = CloudEvent.from_bytes(row["message_value"])
            event.data["customer"] = {**event.data["customer"], "phone": None}
            await s.execute(
                inbox.dead_letters.update()
                .where(inbox.dead_letters.c.id == row["id"])
                .values(message_value=event.to_bytes())
            )
        await s.commit()
    for row in letters:
        outcome = await replay_dead_letter(consumer, row["id"])
        assert outcome.applied, outcome.error
    [case] = [c for c in await cases(container) if c.order_id == order_id]
    assert case.description == "Also my notice period." and case.order_version == 2
    assert await list_dead_letters(container.db, inbox, CONSUMER_GROUP) == []
