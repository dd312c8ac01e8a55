"""Escalating new cases nobody claimed in time (SLA). No HTTP here.

A timer row per new case, written with the case-opened event: it survives
restarts because it is in the database, and it fires once even with several
workers because firing is a compare-and-set on ``escalations_sent`` in the
same transaction as the supervisors' notifications. Any sign that someone
took the case (assigned, started, solved, closed, cancelled) stops it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Select, update
from sqlalchemy import select as select_core
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import Database, one_of, queue_insert, table_of, transaction_scoped
from casebridge_shared.tracing import context_from, current_traceparent, span_from
from notifier import memo
from notifier.directory.service import people_with_role
from notifier.escalation.models import ClaimTimer
from notifier.notifications.models import Kind
from notifier.notifications.service import Alert, notify
from notifier.routing.models import RoutingRule
from notifier.routing.service import DEFAULT_CLAIM_WITHIN_MINUTES, DEFAULT_ESCALATE_AGAIN_AFTER_MINUTES

log = structlog.get_logger(__name__)
_STARTED_IN_THIS_TRANSACTION = "notifier.claim_timers_started"
_HAS_TIMER = "claim-timer"  # memo kind: case id -> whether it has a claim timer
_CLAIM_TIMERS = table_of(ClaimTimer)


@functools.cache
def _timers_of(dialect: str) -> Select[tuple[str]]:
    timers = table_of(ClaimTimer)
    return select_core(timers.c.case_id).where(one_of(timers.c.case_id, "case_ids", dialect))


async def _with_timers(session: AsyncSession, case_ids: list[str]) -> dict[str, bool]:
    statement = _timers_of(session.get_bind().dialect.name)
    found = set((await session.execute(statement, {"case_ids": case_ids})).scalars())
    return {case_id: True for case_id in found}


async def look_up_timers(session: AsyncSession, case_ids: Sequence[str]) -> None:
    """Which of a run's new cases have a claim timer already, in one query instead of one each."""
    await memo.per_item(session, _HAS_TIMER, case_ids, lambda missing: _with_timers(session, missing), False)


async def start(
    session: AsyncSession,
    *,
    case_id: str,
    order_id: str,
    product_category: str,
    product_title: str,
    opened_at: datetime,
    rule: RoutingRule | None,
) -> None:
    # A run of events is applied in one transaction: a timer started earlier in it
    # is queued, not yet in the database, so it is remembered here. Its row goes
    # out with the run's other rows at commit, or before a statement of the run
    # that names the timers (stopping it when the case is claimed in the same run).
    started: set[str] = transaction_scoped(session, _STARTED_IN_THIS_TRANSACTION, set)
    if case_id in started:
        return
    looked_up: dict[str, bool] = memo.per_item_store(session, _HAS_TIMER)
    if case_id in looked_up:
        exists = looked_up[case_id]
    else:
        exists = await session.get(ClaimTimer, case_id) is not None
    if exists:
        return
    started.add(case_id)
    first = rule.claim_within_minutes if rule else DEFAULT_CLAIM_WITHIN_MINUTES
    second = rule.escalate_again_after_minutes if rule else DEFAULT_ESCALATE_AGAIN_AFTER_MINUTES
    first_due = opened_at + timedelta(minutes=first)
    queue_insert(
        session,
        _CLAIM_TIMERS,
        {
            "case_id": case_id,
            "order_id": order_id,
            "product_category": product_category,
            "product_title": product_title[:200],
            "opened_at": opened_at,
            "first_due_at": first_due,
            "second_due_at": opened_at + timedelta(minutes=max(second, first)),
            "escalations_sent": 0,
            "stopped_at": None,
            "next_due_at": first_due,
            "traceparent": current_traceparent(),
        },
    )


async def stop(session: AsyncSession, case_id: str, at: datetime) -> None:
    await session.execute(
        update(ClaimTimer)
        .where(col(ClaimTimer.case_id) == case_id, col(ClaimTimer.stopped_at).is_(None))
        .values(stopped_at=at, next_due_at=None)
    )


def _alert(timer: ClaimTimer, level: int) -> Alert:
    waited = timer.first_due_at if level == 1 else timer.second_due_at
    minutes = round((waited - timer.opened_at).total_seconds() / 60)
    return Alert(
        kind=Kind.CASE_ESCALATED,
        dedupe_key=f"escalation:{timer.case_id}:{level}",
        case_id=timer.case_id,
        order_id=timer.order_id,
        title=f"Nobody has taken a new case for {minutes} minutes: {timer.product_title}",
        body=(
            f"A {timer.product_category} case opened at {timer.opened_at:%H:%M} UTC is still waiting. "
            + ("Please assign it." if level == 1 else "Second reminder: please assign it now.")
        ),
        at=waited,
    )


async def fire_due(db: Database, now: datetime, limit: int = 100) -> int:
    """Send the escalations due at ``now``; returns how many fired here (not by another worker)."""
    async with db.session() as session:
        due = list(
            (
                await session.exec(
                    select(ClaimTimer)
                    .where(col(ClaimTimer.stopped_at).is_(None), col(ClaimTimer.next_due_at) <= now)
                    .order_by(col(ClaimTimer.next_due_at))
                    .limit(limit)
                )
            ).all()
        )
    fired = 0
    for timer in due:
        level = timer.escalations_sent + 1
        async with db.write_session() as session:
            claimed = await session.execute(
                update(ClaimTimer)
                .where(
                    col(ClaimTimer.case_id) == timer.case_id,
                    col(ClaimTimer.escalations_sent) == timer.escalations_sent,
                    col(ClaimTimer.stopped_at).is_(None),
                )
                .values(escalations_sent=level, next_due_at=timer.second_due_at if level == 1 else None)
            )
            if int(getattr(claimed, "rowcount", 0) or 0) != 1:
                await session.rollback()
                continue  # another worker fired it, or the case was claimed meanwhile
            supervisors = [p.user_id for p in await people_with_role(session, "supervisor")]
            # On the trace of the case it is about: the notification (and so its deliveries)
            # keeps this span's traceparent.
            with span_from(
                "escalate case",
                context_from(timer.traceparent),
                attributes={
                    "casebridge.service": "notifier",
                    "casebridge.case.id": timer.case_id,
                    "casebridge.escalation.level": level,
                },
            ):
                await notify(session, supervisors, _alert(timer, level))
            await session.commit()
        fired += 1
        log.info("escalation.fired", case_id=timer.case_id, level=level)
    return fired


async def timer_of(session: AsyncSession, case_id: str) -> ClaimTimer | None:
    return await session.get(ClaimTimer, case_id)
