"""Escalation of new cases nobody claimed: once, on time (clock injected), across workers and restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id
from sqlmodel import col, select

from casebridge_shared import telemetry, testing, tracing
from casebridge_shared.db import queued_rows, table_of
from notifier import memo
from notifier.bootstrap import Container, bootstrap
from notifier.escalation import service as escalation
from notifier.escalation.models import ClaimTimer
from notifier.escalation.timer import EscalationTimer
from notifier.notifications.models import Notification
from notifier.routing.models import RoutingRule, Team
from notifier.settings import Settings

from .conftest import People

OPENED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def open_case(
    container: Container, case_id: str = "case-1", *, rule: RoutingRule | None = None
) -> None:
    async with container.db.write_session() as session:
        await escalation.start(
            session,
            case_id=case_id,
            order_id="order-1",
            product_category="family-law",
            product_title="Divorce consultation",
            opened_at=OPENED,
            rule=rule,
        )
        await session.commit()


def timer_at(container: Container, minutes: float) -> EscalationTimer:
    return EscalationTimer(container.db, poll_seconds=1, clock=lambda: OPENED + timedelta(minutes=minutes))


async def escalations(container: Container) -> list[Notification]:
    async with container.db.session() as session:
        rows = await session.exec(
            select(Notification).where(Notification.kind == "case_escalated").order_by(col(Notification.id))
        )
        return list(rows.all())


async def test_fires_once_at_each_threshold(container: Container, people: People) -> None:
    sue, sam = await people.add("supervisor"), await people.add("supervisor")
    await people.add("staff")  # staff are not told about escalations
    await open_case(container)
    assert await timer_at(container, 14.9).tick() == 0
    assert await timer_at(container, 15).tick() == 1
    assert await timer_at(container, 15).tick() == 0
    assert await timer_at(container, 29).tick() == 0
    first = await escalations(container)
    assert sorted(n.recipient_id for n in first) == sorted([sue.user_id, sam.user_id])
    assert first[0].title.startswith("Nobody has taken a new case for 15 minutes")
    assert await timer_at(container, 30).tick() == 1
    assert await timer_at(container, 600).tick() == 0
    both = await escalations(container)
    assert len(both) == 4 and "Second reminder" in both[-1].body


async def test_a_claimed_case_never_escalates(container: Container, people: People) -> None:
    await people.add("supervisor")
    await open_case(container)
    async with container.db.write_session() as session:
        await escalation.stop(session, "case-1", OPENED + timedelta(minutes=3))
        await session.commit()
    assert await timer_at(container, 15).tick() == 0
    assert await timer_at(container, 60).tick() == 0
    assert await escalations(container) == []


async def test_the_routing_rule_sets_the_times(container: Container, people: People) -> None:
    await people.add("supervisor")
    async with container.db.write_session() as session:
        session.add(Team(name="family"))
        await session.flush()
        rule = RoutingRule(
            product_category="family-law",
            team="family",
            claim_within_minutes=5,
            escalate_again_after_minutes=10,
        )
        session.add(rule)
        await session.commit()
    await open_case(container, rule=rule)
    assert await timer_at(container, 5).tick() == 1
    assert await timer_at(container, 10).tick() == 1


async def test_two_workers_fire_it_once(container: Container, settings: Settings, people: People) -> None:
    sue = await people.add("supervisor")
    cases = [f"case-{i}" for i in range(10)]
    for case_id in cases:
        await open_case(container, case_id)
    other = bootstrap(settings)  # a second worker process: its own connections
    try:
        fired = await asyncio.gather(timer_at(container, 16).tick(), timer_at(other, 16).tick())
    finally:
        await other.close()
    assert sum(fired) == 10
    mine = [n for n in await escalations(container) if n.recipient_id == sue.user_id]
    assert sorted(n.case_id for n in mine) == sorted(cases)
    assert [n.seq for n in sorted(mine, key=lambda n: n.seq)] == list(range(1, 11))


async def test_timers_survive_a_restart(container: Container, settings: Settings, people: People) -> None:
    await people.add("supervisor")
    await open_case(container)
    assert await timer_at(container, 15).tick() == 1
    await container.close()
    restarted = bootstrap(settings)
    try:
        assert await timer_at(restarted, 15).tick() == 0  # what fired before the restart does not fire again
        assert await timer_at(restarted, 30).tick() == 1
    finally:
        await restarted.close()
    assert len(await escalations(container)) == 2


async def test_the_loop_runs_until_stopped(container: Container, people: People) -> None:
    await people.add("supervisor")
    await open_case(container)
    timer = EscalationTimer(container.db, poll_seconds=0.01, clock=lambda: OPENED + timedelta(hours=1))
    stop = asyncio.Event()
    task = asyncio.create_task(timer.run(stop))
    try:

        async def both() -> bool:
            return len(await escalations(container)) == 2

        await testing.wait_until(both, timeout=30, message="both escalations")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_a_timer_started_earlier_in_the_transaction_is_not_started_twice(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of events in one transaction may open the same case twice (a copy republished)."""
    async with container.db.write_session() as session:
        looked_up = testing.counting_calls(monkeypatch, session, "get")
        for _copy in range(2):
            await escalation.start(
                session,
                case_id="case-9",
                order_id="order-9",
                product_category="family-law",
                product_title="Divorce consultation",
                opened_at=OPENED,
                rule=None,
            )
        # The copy was answered from the transaction's own memory.
        assert [key for _model, key in looked_up] == ["case-9"]
        # Queued once, not written yet: it goes out with the transaction's other rows.
        assert [t["case_id"] for t in queued_rows(session, table_of(ClaimTimer))] == ["case-9"]
        await session.commit()
    async with container.db.session() as session:
        timers = (await session.exec(select(ClaimTimer))).all()
    assert [t.case_id for t in timers] == ["case-9"]


async def test_a_run_s_new_cases_are_checked_for_timers_in_one_query(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's ``before_run``: one query for the run's case-opened events, none per event."""
    from notifier.notifications import rules
    from notifier.notifications.events import PAYLOAD_MODELS

    from .conftest import CaseEvents

    await open_case(container, "case-old")
    new = [CaseEvents() for _ in range(3)]
    old = CaseEvents()
    old.case_id = "case-old"
    run = [(e, PAYLOAD_MODELS[e.type].model_validate(e.data)) for e in [c.opened() for c in [*new, old]]]
    async with container.uow() as uow:
        session = uow.session
        looked_up = testing.counting_calls(monkeypatch, session, "get")
        await rules.before_run(memo.Lasting())(uow, run)
        for _event, payload in run:
            await escalation.start(
                session,
                case_id=payload.case_id,
                order_id=payload.order_id,
                product_category=payload.product_category,
                product_title=payload.product_title,
                opened_at=OPENED,
                rule=None,
            )
        # Every case was answered from the run's one query.
        assert [key for model, key in looked_up if model is ClaimTimer] == []
        await uow.commit()
    async with container.db.session() as session:
        timers = sorted(t.case_id for t in (await session.exec(select(ClaimTimer))).all())
    assert timers == sorted(["case-old", *(c.case_id for c in new)])  # the old one not started twice


async def test_the_loop_rides_out_a_database_refusing_connections(
    container: Container, people: People
) -> None:
    """Issue 25: the database away (connections terminated, new ones refused) never ends the loop."""
    if container.db.dialect != "postgresql":
        pytest.skip("refuses PostgreSQL connections (run with CASEBRIDGE_TEST_POSTGRES_URL)")
    await people.add("supervisor")
    await open_case(container)
    timer = EscalationTimer(container.db, poll_seconds=0.01, clock=lambda: OPENED + timedelta(hours=1))
    failed: list[BaseException] = []
    tick = timer.tick

    async def counted_tick() -> int:
        try:
            return await tick()
        except Exception as exc:
            failed.append(exc)
            raise

    timer.tick = counted_tick  # type: ignore[method-assign]
    stop = asyncio.Event()
    async with testing.connections_refused(container.db.url):
        await testing.terminate_connections(container.db.url)
        task = asyncio.create_task(timer.run(stop))
        try:
            await testing.wait_until(lambda: len(failed) >= 3, timeout=30, message="failed passes")
            assert not task.done()
        except BaseException:
            stop.set()
            raise
    try:

        async def both() -> bool:
            return len(await escalations(container)) == 2

        await testing.wait_until(both, timeout=30, message="both escalations once the database is back")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_an_escalation_is_sent_on_the_trace_of_the_case_it_is_about(
    container: Container, people: People
) -> None:
    """Minutes after the case opened, the supervisors' alert continues the order's trace: the
    escalation span is a child of the span that started the timer (the case-opened consumer's)."""
    await people.add("supervisor")
    exporter = InMemorySpanExporter()
    with telemetry.exporting_to(exporter):
        with tracing.span_from("process case-opened", Context()) as opened:
            await open_case(container)
        await timer_at(container, 15).tick()
    opened_ids = opened.get_span_context()
    [escalated] = [s for s in exporter.get_finished_spans() if s.name == "escalate case"]
    assert escalated.context is not None and escalated.parent is not None
    assert escalated.context.trace_id == opened_ids.trace_id
    assert escalated.parent.span_id == opened_ids.span_id
    [alert] = await escalations(container)
    assert tracing.parse_trace_id(alert.traceparent) == format_trace_id(opened_ids.trace_id)


async def test_an_escalation_of_a_case_opened_without_a_trace_starts_its_own(
    container: Container, people: People
) -> None:
    await people.add("supervisor")
    await open_case(container)  # no span: a timer started before tracing, or by a test
    exporter = InMemorySpanExporter()
    with telemetry.exporting_to(exporter):
        assert await timer_at(container, 15).tick() == 1
    [escalated] = [s for s in exporter.get_finished_spans() if s.name == "escalate case"]
    assert escalated.parent is None
    [alert] = await escalations(container)
    assert escalated.context is not None
    assert tracing.parse_trace_id(alert.traceparent) == format_trace_id(escalated.context.trace_id)
