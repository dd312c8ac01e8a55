"""Who is told what: kept by the consumer across runs, and seen anew after any change to it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from casebridge_shared import testing
from notifier import memo
from notifier.bootstrap import Container
from notifier.directory.service import people_with_role
from notifier.routing import service as routing

from .conftest import People


async def sql(container: Container, *commands: str) -> None:
    """An operator's change, straight into the database (no code of ours involved)."""
    async with container.db.write_session() as session:
        for command in commands:
            await session.execute(text(command))
        await session.commit()


async def who_gets(container: Container, lasting: memo.Lasting, category: str) -> tuple[list[str], list[str]]:
    """What a case-opened run asks: the category's team, and the supervisors."""
    async with container.uow() as uow:
        await lasting.bind(uow.session)
        rule = await routing.rule_for(uow.session, category)
        team = await routing.team_for_case(uow.session, rule)
        supervisors = [p.user_id for p in await people_with_role(uow.session, "supervisor")]
        await uow.commit()
    return team, supervisors


@pytest.fixture
async def family_team(container: Container, people: People) -> list[str]:
    anna, ben = await people.add("staff"), await people.add("staff")
    await sql(
        container,
        "INSERT INTO teams (name, updated_at) VALUES ('family', CURRENT_TIMESTAMP)",
        f"INSERT INTO team_members (team, user_id) VALUES ('family', '{anna.user_id}')",
        f"INSERT INTO team_members (team, user_id) VALUES ('family', '{ben.user_id}')",
        "INSERT INTO routing_rules (product_category, team, claim_within_minutes,"
        " escalate_again_after_minutes, updated_at)"
        " VALUES ('family-law', 'family', 15, 30, CURRENT_TIMESTAMP)",
    )
    return sorted([anna.user_id, ben.user_id])


async def test_the_answers_last_across_runs_while_nothing_changes(
    container: Container, people: People, family_team: list[str]
) -> None:
    boss = await people.add("supervisor")
    lasting = memo.Lasting()
    with testing.statements_sent(container.db) as first:
        assert await who_gets(container, lasting, "family-law") == (family_team, [boss.user_id])
    with testing.statements_sent(container.db) as second:
        assert await who_gets(container, lasting, "family-law") == (family_team, [boss.user_id])
    looked_up = [s for s in first if s.startswith("SELECT") and "audience_version" not in s]
    assert len(looked_up) == 3  # the rule, the team, the supervisors
    # The second run asks only whether anything changed.
    assert [s for s in second if s.startswith("SELECT")] == [
        s for s in second if s.startswith("SELECT audience_version.version")
    ]
    assert len([s for s in second if s.startswith("SELECT")]) == 1


@pytest.mark.parametrize(
    "change",
    [
        "INSERT INTO team_members (team, user_id) VALUES ('family', 'new-colleague')",
        "DELETE FROM team_members WHERE user_id = 'new-colleague' OR team = 'family'",
        "UPDATE routing_rules SET claim_within_minutes = 5",
        "UPDATE people SET roles = 'staff supervisor'",
    ],
)
async def test_any_change_to_who_is_told_is_seen_by_the_next_run(
    container: Container, people: People, family_team: list[str], change: str
) -> None:
    lasting = memo.Lasting()
    before = await who_gets(container, lasting, "family-law")
    await sql(container, change)
    after = await who_gets(container, lasting, "family-law")
    assert after != before or "claim_within_minutes" in change
    async with container.uow() as uow:
        await lasting.bind(uow.session)
        rule = await routing.rule_for(uow.session, "family-law")
        assert rule is not None
        if "claim_within_minutes" in change:
            assert rule.claim_within_minutes == 5  # the rule itself was read again


async def test_a_webhook_s_failure_count_does_not_count_as_a_change(container: Container) -> None:
    lasting = memo.Lasting()
    await sql(
        container,
        "INSERT INTO webhook_subscriptions (id, url, secret, event_types, description, active,"
        " consecutive_failures, created_by, created_at) VALUES ('w-1', 'http://127.0.0.1:9/hook',"
        " 'fernet:x', '[]', '', true, 0, 'admin', CURRENT_TIMESTAMP)",
    )
    async with container.uow() as uow:
        await lasting.bind(uow.session)
        await uow.commit()
    seen = lasting.version
    await sql(container, "UPDATE webhook_subscriptions SET consecutive_failures = 3")
    async with container.uow() as uow:
        await lasting.bind(uow.session)
        await uow.commit()
    assert lasting.version == seen
    await sql(container, "UPDATE webhook_subscriptions SET active = false")
    async with container.uow() as uow:
        await lasting.bind(uow.session)
        await uow.commit()
    assert lasting.version is not None and seen is not None and lasting.version > seen


async def test_a_rolled_back_run_leaves_nothing_behind(
    container: Container, people: People, family_team: list[str]
) -> None:
    lasting = memo.Lasting()
    async with container.uow() as uow:
        await lasting.bind(uow.session)
        # The run changes the team itself, looks it up (seeing its own change), then fails.
        await uow.session.execute(text("INSERT INTO team_members (team, user_id) VALUES ('family', 'ghost')"))
        rule = await routing.rule_for(uow.session, "family-law")
        assert "ghost" in await routing.team_for_case(uow.session, rule)
        await uow.rollback()
    assert lasting.answers == {}
    team, _supervisors = await who_gets(container, lasting, "family-law")
    assert team == family_team


async def test_a_directory_change_in_the_run_is_seen_by_the_rest_of_it(
    container: Container, people: People
) -> None:
    lasting = memo.Lasting()
    boss = await people.add("supervisor")
    async with container.uow() as uow:
        await lasting.bind(uow.session)
        assert [p.user_id for p in await people_with_role(uow.session, "supervisor")] == [boss.user_id]
        await uow.session.execute(text(f"UPDATE people SET active = false WHERE user_id = '{boss.user_id}'"))
        memo.forget(uow.session)  # what the directory's handler does after changing someone
        assert await people_with_role(uow.session, "supervisor") == []
        await uow.commit()
    _team, supervisors = await who_gets(container, lasting, "unrouted")
    assert supervisors == []


async def test_a_run_asks_about_all_its_recipients_at_once(
    container: Container, people: People, family_team: list[str]
) -> None:
    """Cases for two teams in one run: one question each about numbers and preferences."""
    from notifier.notifications import rules
    from notifier.notifications.events import PAYLOAD_MODELS

    from .conftest import CaseEvents

    boss = await people.add("supervisor")
    others = [await people.add("staff") for _ in range(2)]
    cases = [CaseEvents(category=c) for c in ("family-law", "unrouted", "family-law", "unrouted")]
    run = [(e, PAYLOAD_MODELS[e.type].model_validate(e.data)) for e in (c.opened() for c in cases)]
    handlers = rules.handlers(container.settings)
    with testing.statements_sent(container.db) as sent:
        async with container.uow() as uow:
            await rules.before_run(memo.Lasting())(uow, run)
            for cloud_event, payload in run:
                await handlers[cloud_event.type](uow, cloud_event, payload)
            await uow.commit()
    numbers = [s for s in sent if "SELECT notifications.seq FROM notifications" in s]
    preferences = [s for s in sent if s.startswith("SELECT preferences.")]
    assert (len(numbers), len(preferences)) == (1, 1), sent
    async with container.db.session() as session:
        rows = (await session.execute(text("SELECT recipient_id, seq FROM notifications"))).all()
    told: dict[str, list[int]] = {}
    for recipient, seq in rows:
        told.setdefault(recipient, []).append(seq)
    # Unrouted cases go to every staff member; the family team's cases to the team; all to the boss.
    everyone = sorted([*family_team, *(p.user_id for p in others)])
    assert sorted(told) == sorted([*everyone, boss.user_id])
    assert sorted(told[boss.user_id]) == [1, 2, 3, 4]
    assert all(sorted(told[p]) == [1, 2, 3, 4] for p in family_team)
    assert all(sorted(told[p.user_id]) == [1, 2] for p in others)


async def test_numbers_stay_right_when_a_directory_change_in_the_run_forgets_the_look_ups(
    container: Container, people: People
) -> None:
    """The run's own numbering is not a look-up: forgetting the directory keeps it."""
    from datetime import UTC, datetime

    from notifier.notifications.models import Kind
    from notifier.notifications.service import Alert, notify

    me = await people.add("staff")

    def alert(n: int) -> Alert:
        return Alert(Kind.CASE_ASSIGNED, f"k-{n}", f"c-{n}", f"o-{n}", "Yours", "Now.", datetime.now(UTC))

    async with container.uow() as uow:
        await notify(uow.session, [me.user_id], alert(1))
        memo.forget(uow.session)  # as after an identity event in the same run
        await notify(uow.session, [me.user_id], alert(2))
        await uow.commit()
    async with container.db.session() as session:
        seqs = await session.execute(
            text(f"SELECT seq FROM notifications WHERE recipient_id = '{me.user_id}'")
        )
        assert sorted(seqs.scalars()) == [1, 2]
