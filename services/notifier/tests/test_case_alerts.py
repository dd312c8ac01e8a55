"""The worker's consumer: case events become the right people's notifications and deliveries (A5)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import col, select

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.events import CASES_TOPIC
from casebridge_shared.inbox import list_dead_letters
from casebridge_shared.testing import count_rows
from notifier.bootstrap import CONSUMER_GROUP, Container
from notifier.db import inbox
from notifier.deliveries.models import Delivery, PushSubscription
from notifier.directory.models import Person
from notifier.escalation.models import ClaimTimer
from notifier.notifications.models import Notification
from notifier.routing.models import RoutingRule, Team, TeamMember

from .conftest import CaseEvents, People, consume_until, identity_event, publish


async def _notifications(container: Container) -> list[Notification]:
    async with container.db.session() as session:
        rows = await session.exec(select(Notification).order_by(col(Notification.id)))
        return list(rows.all())


async def _deliveries(container: Container) -> list[Delivery]:
    async with container.db.session() as session:
        return list((await session.exec(select(Delivery))).all())


async def _route(container: Container, category: str, team: str, members: list[str]) -> None:
    async with container.db.write_session() as session:
        session.add(Team(name=team))
        await session.flush()
        for m in members:
            session.add(TeamMember(team=team, user_id=m))
        session.add(RoutingRule(product_category=category, team=team))
        await session.commit()


async def test_a_new_case_alerts_its_team_and_the_supervisors_not_other_staff(
    broker: EmbeddedBroker, container: Container, people: People
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    family = [await people.add("staff", name="Fay"), await people.add("staff", name="Finn")]
    other = await people.add("staff", name="Otto")
    boss = await people.add("supervisor", name="Sue")
    customer = await people.add("customer", name="Carl")
    await _route(container, "family-law", "family", [p.user_id for p in family])
    async with container.db.write_session() as session:
        session.add(
            PushSubscription(
                id="sub-1",
                user_id=family[0].user_id,
                endpoint="https://push.example/1",
                p256dh="k" * 20,
                auth="a" * 8,
            )
        )
        await session.commit()

    case = CaseEvents(category="family-law", title="Divorce consultation")
    opened = case.opened()
    await publish(broker, opened)

    async def told() -> bool:
        return len(await _notifications(container)) >= 3

    await consume_until(container, told)
    notes = await _notifications(container)
    assert sorted(n.recipient_id for n in notes) == sorted(
        [family[0].user_id, family[1].user_id, boss.user_id]
    )
    assert other.user_id not in {n.recipient_id for n in notes} and customer.user_id not in {
        n.recipient_id for n in notes
    }
    assert {n.kind for n in notes} == {"case_opened"}
    assert all(n.seq == 1 and n.case_id == case.case_id for n in notes)
    assert notes[0].title == "New case: Divorce consultation"
    # Fay has a phone registered: one push; nobody gets email for a new case by default.
    deliveries = await _deliveries(container)
    assert [(d.channel, d.recipient) for d in deliveries] == [("push", "sub-1")]
    assert deliveries[0].message["case_id"] == case.case_id
    # The claim timer started with the category's default SLA.
    async with container.db.session() as session:
        timer = await session.get(ClaimTimer, case.case_id)
    assert timer is not None and timer.stopped_at is None and timer.escalations_sent == 0


async def test_a_category_without_a_rule_alerts_every_staff_member(
    broker: EmbeddedBroker, container: Container, people: People
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    staff = [await people.add("staff"), await people.add("staff")]
    await people.add("staff", active=False)
    await publish(broker, CaseEvents(category="tax").opened())

    async def told() -> bool:
        return len(await _notifications(container)) >= 2

    await consume_until(container, told)
    assert sorted(n.recipient_id for n in await _notifications(container)) == sorted(p.user_id for p in staff)


async def test_the_case_moving_on_tells_the_right_people_once(
    broker: EmbeddedBroker, container: Container, people: People
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    worker = await people.add("staff", name="Wanda")
    boss = await people.add("supervisor", name="Sue")
    customer = await people.add("customer", name="Carl")
    case = CaseEvents()
    case.customer_id = customer.user_id
    events = [
        case.opened(),
        case.assigned(worker.user_id, by=boss.user_id),  # the supervisor assigned it: tell Wanda
        case.event("status-changed", "in_progress", previous_status="assigned"),
        case.solution(),
        case.closed(),
    ]
    await publish(broker, *events)

    async def done() -> bool:
        return len([d for d in await _deliveries(container) if d.channel == "email"]) >= 3

    await consume_until(container, done)
    notes = await _notifications(container)
    mine = [n for n in notes if n.recipient_id == worker.user_id]
    boss_notes = [n for n in notes if n.recipient_id == boss.user_id]
    assert [(n.kind, n.seq) for n in mine] == [("case_opened", 1), ("case_assigned", 2)]
    assert [(n.kind, n.seq) for n in boss_notes] == [("case_opened", 1), ("solution_proposed", 2)]
    emails = sorted(
        (d.recipient, d.message["subject"]) for d in await _deliveries(container) if d.channel == "email"
    )
    assert emails == sorted(
        [
            (worker.user_id, mine[1].title),  # assignments are emailed by default
            (customer.user_id, "Your legal solution is ready"),
            (customer.user_id, "Your order is complete"),
        ]
    )
    # Each customer email links to the order's page in the portal (issue 26).
    portal = container.settings.customer_portal_url.rstrip("/")
    for delivery in await _deliveries(container):
        if delivery.channel == "email" and delivery.recipient == customer.user_id:
            assert f"{portal}/portal/orders/{case.order_id}" in delivery.message["text"]
    async with container.db.session() as session:
        timer = await session.get(ClaimTimer, case.case_id)
    assert timer is not None and timer.stopped_at is not None

    # Everything delivered again (an offset reset): nobody is told twice.
    before = (len(notes), len(await _deliveries(container)))
    await testing.reset_group_offsets(broker.bootstrap_servers, CONSUMER_GROUP, CASES_TOPIC)
    marker = CaseEvents().opened()
    await publish(broker, marker)

    async def marker_seen() -> bool:
        async with container.db.session() as session:
            row = await session.execute(
                select(inbox.inbox.c.event_id).where(inbox.inbox.c.event_id == marker.id)
            )
            return row.first() is not None

    await consume_until(container, marker_seen)
    after_notes = [n for n in await _notifications(container) if n.case_id == case.case_id]
    assert (
        len(after_notes),
        len([d for d in await _deliveries(container) if d.case_id == case.case_id]),
    ) == before


async def test_taking_a_case_yourself_tells_nobody_and_a_cancellation_tells_the_assignee(
    broker: EmbeddedBroker, container: Container, people: People
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    worker = await people.add("staff")
    case = CaseEvents()
    await publish(broker, case.opened(), case.assigned(worker.user_id), case.cancelled(worker.user_id))

    async def done() -> bool:
        return any(n.kind == "case_cancelled" for n in await _notifications(container))

    await consume_until(container, done)
    assert [n.kind for n in await _notifications(container)] == ["case_opened", "case_cancelled"]


async def test_the_directory_follows_identity_events_and_ignores_stale_ones(
    broker: EmbeddedBroker, container: Container
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    person = Person(user_id="u-1", email="new@casebridge.example", full_name="New", roles="staff", version=1)
    promoted = person.model_copy(update={"roles": "staff supervisor", "version": 2})
    stale = person.model_copy(update={"email": "stale@casebridge.example", "version": 1})
    await publish(
        broker,
        identity_event(person),
        identity_event(promoted, "roles-changed"),
        identity_event(stale, "user-updated"),
    )

    async def applied() -> bool:
        return await count_rows(container.db, inbox.inbox) >= 3

    await consume_until(container, applied)
    async with container.db.session() as session:
        stored = await session.get(Person, "u-1")
    assert (
        stored is not None and stored.roles == "staff supervisor" and stored.email == "new@casebridge.example"
    )


async def test_events_it_cannot_read_are_dead_lettered_and_the_next_is_applied(
    broker: EmbeddedBroker, container: Container, people: People
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    worker = await people.add("staff")
    broken = CaseEvents().opened()
    broken.data.pop("product_category")
    good = CaseEvents().opened()
    await publish(broker, b"{not json", broken, good)

    async def handled() -> bool:
        # Three keys, so possibly three partitions: wait for all of them.
        letters = await list_dead_letters(container.db, inbox, group=CONSUMER_GROUP)
        return len(letters) >= 2 and any(
            n.case_id == good.partitionkey for n in await _notifications(container)
        )

    await consume_until(container, handled)
    letters = await list_dead_letters(container.db, inbox, group=CONSUMER_GROUP)
    assert len(letters) == 2
    assert [n.recipient_id for n in await _notifications(container)] == [worker.user_id]


async def test_a_customer_message_alerts_the_assignee_or_else_the_team(
    broker: EmbeddedBroker, container: Container, people: People
) -> None:
    """Issue 26: the customer wrote on the order's thread."""
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    family = [await people.add("staff", name="Fay"), await people.add("staff", name="Finn")]
    sam = await people.add("staff", name="Sam")
    await _route(container, "family-law", "family", [p.user_id for p in family])

    unassigned, assigned = CaseEvents(category="family-law"), CaseEvents(category="family-law")

    def wrote(case: CaseEvents, assignee: str | None) -> Any:
        return case.event(
            "customer-message-received",
            "new" if assignee is None else "in_progress",
            message_id=str(uuid.uuid4()),
            assignee_id=assignee,
            product_category=case.category,
        )

    to_team, to_sam = wrote(unassigned, None), wrote(assigned, sam.user_id)
    await publish(broker, to_team, to_sam, to_sam)  # the second copy is dropped by the inbox

    async def told() -> bool:
        return len([n for n in await _notifications(container) if n.kind == "customer_message"]) >= 3

    await consume_until(container, told)
    notes = [n for n in await _notifications(container) if n.kind == "customer_message"]
    assert sorted((n.case_id, n.recipient_id) for n in notes) == sorted(
        [(unassigned.case_id, p.user_id) for p in family] + [(assigned.case_id, sam.user_id)]
    )
    assert all(n.title.startswith("New message from the customer") for n in notes)
