"""Who is told what when a case moves (SPEC A5): the handlers of ``casebridge.cases.v1``.

- case opened: the team its product category routes to, and the supervisors;
  the claim timer starts.
- case assigned: the assignee (unless they took it themselves); the timer stops.
- solution proposed: the supervisors; the customer gets an email.
- case closed: the customer gets an email.
- case cancelled: the assignee, if there was one.
- customer message: the assignee; with nobody on the case, the team its product
  category routes to (issue 26).
Every case event also goes to the webhook subscriptions that want it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import BeforeRun, Handler
from casebridge_shared.outbox import UnitOfWork
from notifier import memo
from notifier.deliveries import service as deliveries
from notifier.directory.service import people_with_role
from notifier.escalation import service as escalation
from notifier.notifications.events import (
    ALL_CASE_EVENTS,
    CASE_ASSIGNED,
    CASE_CANCELLED,
    CASE_CLOSED,
    CASE_OPENED,
    CUSTOMER_MESSAGE,
    SOLUTION_PROPOSED,
    STATUS_CHANGED,
    CaseAssigned,
    CaseCancelled,
    CaseEvent,
    CaseOpened,
    CustomerMessageReceived,
    SolutionProposed,
)
from notifier.notifications.models import Kind
from notifier.notifications.service import Alert, look_up_recipients, notify
from notifier.routing import service as routing
from notifier.settings import Settings


def _short(order_id: str) -> str:
    return order_id[:8]


async def _supervisors(uow: UnitOfWork) -> list[str]:
    return [p.user_id for p in await people_with_role(uow.session, "supervisor")]


async def case_opened(uow: UnitOfWork, event: CloudEvent, case: CaseOpened) -> None:
    rule = await routing.rule_for(uow.session, case.product_category)
    team = await routing.team_for_case(uow.session, rule)
    alert = Alert(
        kind=Kind.CASE_OPENED,
        dedupe_key=event.id,
        case_id=case.case_id,
        order_id=case.order_id,
        title=f"New case: {case.product_title}"[:200],
        body=f"Order {_short(case.order_id)} ({case.product_category}) is waiting for someone to take it.",
        at=case.at,
    )
    await notify(uow.session, team + await _supervisors(uow), alert)
    await escalation.start(
        uow.session,
        case_id=case.case_id,
        order_id=case.order_id,
        product_category=case.product_category,
        product_title=case.product_title,
        opened_at=case.at,
        rule=rule,
    )


async def case_assigned(uow: UnitOfWork, event: CloudEvent, case: CaseAssigned) -> None:
    await escalation.stop(uow.session, case.case_id, case.at)
    if case.assigned_by == case.assignee_id:
        return  # they took it themselves: nothing to tell them
    timer = await escalation.timer_of(uow.session, case.case_id)
    what = timer.product_title if timer else "a case"
    alert = Alert(
        kind=Kind.CASE_ASSIGNED,
        dedupe_key=event.id,
        case_id=case.case_id,
        order_id=case.order_id,
        title=f"Assigned to you: {what}"[:200],
        body=f"Order {_short(case.order_id)} is now yours.",
        at=case.at,
    )
    await notify(uow.session, [case.assignee_id], alert)


async def status_changed(uow: UnitOfWork, _event: CloudEvent, case: CaseEvent) -> None:
    if case.status != "new":
        await escalation.stop(uow.session, case.case_id, case.at)


def solution_proposed(settings: Settings) -> Handler:
    async def handle(uow: UnitOfWork, event: CloudEvent, case: SolutionProposed) -> None:
        await escalation.stop(uow.session, case.case_id, case.at)
        alert = Alert(
            kind=Kind.SOLUTION_PROPOSED,
            dedupe_key=event.id,
            case_id=case.case_id,
            order_id=case.order_id,
            title=f"Solution proposed for order {_short(case.order_id)}"[:200],
            body=case.solution_summary[:500],
            at=case.at,
        )
        await notify(uow.session, await _supervisors(uow), alert)
        deliveries.queue_email(
            uow.session,
            event.id,
            case.case_id,
            case.customer_id,
            {
                "subject": "Your legal solution is ready",
                "text": (
                    f"Good news: the solution for your order {_short(case.order_id)} is ready.\n\n"
                    f"{case.solution_summary}\n\n"
                    f"Read it and download its documents at {_order_url(settings, case)}"
                ),
            },
        )

    return handle


def case_closed(settings: Settings) -> Handler:
    async def handle(uow: UnitOfWork, event: CloudEvent, case: CaseEvent) -> None:
        await escalation.stop(uow.session, case.case_id, case.at)
        deliveries.queue_email(
            uow.session,
            event.id,
            case.case_id,
            case.customer_id,
            {
                "subject": "Your order is complete",
                "text": (
                    f"We have completed your order {_short(case.order_id)}. Everything we prepared for you "
                    f"stays available at {_order_url(settings, case)}"
                ),
            },
        )

    return handle


async def case_cancelled(uow: UnitOfWork, event: CloudEvent, case: CaseCancelled) -> None:
    await escalation.stop(uow.session, case.case_id, case.at)
    if not case.assignee_id:
        return
    alert = Alert(
        kind=Kind.CASE_CANCELLED,
        dedupe_key=event.id,
        case_id=case.case_id,
        order_id=case.order_id,
        title=f"Cancelled: order {_short(case.order_id)}",
        body=f"The case was cancelled{': ' + case.reason if case.reason else ''}."[:500],
        at=case.at,
    )
    await notify(uow.session, [case.assignee_id], alert)


async def customer_message(uow: UnitOfWork, event: CloudEvent, message: CustomerMessageReceived) -> None:
    if message.assignee_id:
        recipients = [message.assignee_id]
    else:
        rule = await routing.rule_for(uow.session, message.product_category)
        recipients = await routing.team_for_case(uow.session, rule)
    alert = Alert(
        kind=Kind.CUSTOMER_MESSAGE,
        dedupe_key=event.id,
        case_id=message.case_id,
        order_id=message.order_id,
        title=f"New message from the customer: order {_short(message.order_id)}",
        body="The customer wrote on the order's thread; open the case to read and reply.",
        at=message.at,
    )
    await notify(uow.session, recipients, alert)


def _order_url(settings: Settings, case: CaseEvent) -> str:
    """The order's page in the customer portal (order-intake's /portal/), not its API resource."""
    return f"{settings.customer_portal_url.rstrip('/')}/portal/orders/{case.order_id}"


async def _nothing(_uow: UnitOfWork, _event: CloudEvent, _payload: Any) -> None:
    return None


def _with_webhooks(handler: Callable[[UnitOfWork, CloudEvent, Any], Awaitable[None]]) -> Handler:
    async def handle(uow: UnitOfWork, event: CloudEvent, payload: Any) -> None:
        await handler(uow, event, payload)
        await deliveries.queue_webhooks(uow.session, event)

    return handle


def before_run(lasting: memo.Lasting) -> BeforeRun:
    """Before a run's events: who is told what, from what the consumer keeps while nothing changed;
    and what the run's case-opened events would each look up (their claim timers, their
    recipients' last numbers and preferences), one query each for the whole run."""

    async def prepare(uow: UnitOfWork, run: Sequence[tuple[CloudEvent, Any]]) -> None:
        await lasting.bind(uow.session)
        opened: list[CaseOpened] = [payload for event, payload in run if event.type == CASE_OPENED]
        if not opened:
            return
        await escalation.look_up_timers(uow.session, [case.case_id for case in opened])
        # Everyone the run's new cases alert: asked about together, not one team per event.
        recipients = set(await _supervisors(uow))
        for case in opened:
            rule = await routing.rule_for(uow.session, case.product_category)
            recipients.update(await routing.team_for_case(uow.session, rule))
        await look_up_recipients(uow.session, sorted(recipients))

    return prepare


def handlers(settings: Settings) -> dict[str, Handler]:
    specific: dict[str, Handler] = {
        CASE_OPENED: case_opened,
        CASE_ASSIGNED: case_assigned,
        STATUS_CHANGED: status_changed,
        SOLUTION_PROPOSED: solution_proposed(settings),
        CASE_CLOSED: case_closed(settings),
        CASE_CANCELLED: case_cancelled,
        CUSTOMER_MESSAGE: customer_message,
    }
    return {t: _with_webhooks(specific.get(t, _nothing)) for t in ALL_CASE_EVENTS}
