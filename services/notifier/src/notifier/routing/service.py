"""Who a new case goes to, and the admin's edits of teams and routing rules. No HTTP here.

A category with no rule goes to every active staff member: a fresh install
alerts everyone rather than no one. Supervisors are added by the caller.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import utcnow
from casebridge_shared.problems import Conflict, NotFound, PreconditionFailed, Unprocessable
from casebridge_shared.versioning import check_version
from notifier import memo
from notifier.directory.service import people_with_role
from notifier.routing.models import RoutingRule, RoutingRuleWrite, Team, TeamMember, TeamRead

DEFAULT_CLAIM_WITHIN_MINUTES = 15
DEFAULT_ESCALATE_AGAIN_AFTER_MINUTES = 30


async def rule_for(session: AsyncSession, product_category: str) -> RoutingRule | None:
    return await memo.once(
        session, ("rule", product_category), lambda: session.get(RoutingRule, product_category)
    )


async def team_for_case(session: AsyncSession, rule: RoutingRule | None) -> list[str]:
    """User ids of the staff a new case goes to, by its category's rule (none: every staff member)."""
    if rule is None:
        return [p.user_id for p in await people_with_role(session, "staff")]
    team = rule.team

    async def load() -> list[str]:
        rows = await session.exec(select(TeamMember.user_id).where(TeamMember.team == team))
        return sorted(rows.all())

    return await memo.once(session, ("team", team), load)


def _no_version_of(what: str, expected_version: int | None) -> None:
    """An If-Match naming a version of something that does not exist is stale (RFC 9110 13.1.1)."""
    if expected_version is not None:
        raise PreconditionFailed(f"there is no {what} at version {expected_version}", field="header.If-Match")


async def _members(session: AsyncSession, name: str) -> list[str]:
    rows = await session.exec(
        select(TeamMember.user_id).where(TeamMember.team == name).order_by(col(TeamMember.user_id))
    )
    return list(rows.all())


async def list_teams(session: AsyncSession) -> list[TeamRead]:
    teams = (await session.exec(select(Team).order_by(col(Team.name)))).all()
    return [
        TeamRead(
            name=t.name, members=await _members(session, t.name), updated_at=t.updated_at, version=t.version
        )
        for t in teams
    ]


async def get_team(session: AsyncSession, name: str) -> TeamRead:
    team = await session.get(Team, name)
    if team is None:
        raise NotFound(f"There is no team {name!r}.")
    return TeamRead(
        name=team.name,
        members=await _members(session, name),
        updated_at=team.updated_at,
        version=team.version,
    )


async def put_team(
    session: AsyncSession, name: str, members: list[str], expected_version: int | None = None
) -> tuple[TeamRead, bool]:
    """Create the team or replace its members; returns the team and whether it is new."""
    team = await session.get(Team, name)
    created = team is None
    if team is None:
        _no_version_of(f"team {name!r}", expected_version)
        team = Team(name=name)
    else:
        check_version(team.version, expected_version)
        team.version += 1
    team.updated_at = utcnow()
    session.add(team)
    await session.flush()
    await session.execute(delete(TeamMember).where(col(TeamMember.team) == name))
    for user_id in sorted(set(members)):
        session.add(TeamMember(team=name, user_id=user_id))
    await session.flush()
    read = TeamRead(name=name, members=sorted(set(members)), updated_at=team.updated_at, version=team.version)
    return read, created


async def delete_team(session: AsyncSession, name: str, expected_version: int | None = None) -> None:
    team = await session.get(Team, name)
    if team is None:
        raise NotFound(f"There is no team {name!r}.")
    check_version(team.version, expected_version)
    used = (await session.exec(select(RoutingRule.product_category).where(RoutingRule.team == name))).all()
    if used:
        raise Conflict(
            f"Team {name!r} still receives new cases of {', '.join(sorted(used))}; change those rules first."
        )
    await session.execute(delete(TeamMember).where(col(TeamMember.team) == name))
    await session.delete(team)


async def list_rules(session: AsyncSession) -> list[RoutingRule]:
    return list((await session.exec(select(RoutingRule).order_by(col(RoutingRule.product_category)))).all())


async def get_rule(session: AsyncSession, category: str) -> RoutingRule:
    rule = await session.get(RoutingRule, category)
    if rule is None:
        raise NotFound(f"There is no routing rule for {category!r}.")
    return rule


async def put_rule(
    session: AsyncSession, category: str, body: RoutingRuleWrite, expected_version: int | None = None
) -> tuple[RoutingRule, bool]:
    if body.escalate_again_after_minutes <= body.claim_within_minutes:
        raise Unprocessable(
            "escalate_again_after_minutes must be greater than claim_within_minutes.",
            field="escalate_again_after_minutes",
        )
    if await session.get(Team, body.team) is None:
        raise Unprocessable(
            f"There is no team {body.team!r}; create it first (PUT /teams/{{name}}).", field="team"
        )
    rule = await session.get(RoutingRule, category)
    created = rule is None
    if rule is None:
        _no_version_of(f"routing rule for {category!r}", expected_version)
        rule = RoutingRule(product_category=category, team=body.team)
    else:
        check_version(rule.version, expected_version)
        rule.version += 1
    rule.team = body.team
    rule.claim_within_minutes = body.claim_within_minutes
    rule.escalate_again_after_minutes = body.escalate_again_after_minutes
    rule.updated_at = utcnow()
    session.add(rule)
    await session.flush()
    return rule, created


async def delete_rule(session: AsyncSession, category: str, expected_version: int | None = None) -> None:
    rule = await get_rule(session, category)
    check_version(rule.version, expected_version)
    await session.delete(rule)
