"""Routes: teams and the routing of new cases by product category (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from casebridge_shared.auth import AdminUser
from casebridge_shared.deps import SessionDep, UowDep
from casebridge_shared.openapi import ETAG, response_headers
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.versioning import IfMatch, etag
from notifier.routing import service
from notifier.routing.models import NAME_PATTERN, RoutingRuleRead, RoutingRuleWrite, TeamRead, TeamWrite

router = APIRouter(tags=["routing"], responses=PROBLEM_RESPONSES)

TeamName = Annotated[str, Path(pattern=NAME_PATTERN, description="lower case, digits, - and _")]
Category = Annotated[str, Path(min_length=1, max_length=100)]


@router.get("/teams", response_model=list[TeamRead], summary="Teams and their members")
async def list_teams(_admin: AdminUser, session: SessionDep) -> list[TeamRead]:
    return await service.list_teams(session)


@router.get(
    "/teams/{name}", response_model=TeamRead, summary="One team", responses=response_headers(200, ETAG)
)
async def get_team(name: TeamName, _admin: AdminUser, session: SessionDep, response: Response) -> TeamRead:
    team = await service.get_team(session, name)
    response.headers[ETAG] = etag(team.version)
    return team


@router.put(
    "/teams/{name}",
    response_model=TeamRead,
    summary="Create a team or replace its members",
    responses={**response_headers(200, ETAG), **response_headers(201, ETAG)},
)
async def save_team(
    name: TeamName, body: TeamWrite, _admin: AdminUser, uow: UowDep, response: Response, version: IfMatch
) -> TeamRead:
    team, created = await service.put_team(uow.session, name, body.members, version)
    await uow.commit()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers[ETAG] = etag(team.version)
    return team


@router.delete("/teams/{name}", status_code=204, summary="Delete a team no rule routes to")
async def delete_team(name: TeamName, _admin: AdminUser, uow: UowDep, version: IfMatch) -> None:
    await service.delete_team(uow.session, name, version)
    await uow.commit()


@router.get("/routing-rules", response_model=list[RoutingRuleRead], summary="Which team gets which category")
async def list_routing_rules(_admin: AdminUser, session: SessionDep) -> list[RoutingRuleRead]:
    return [RoutingRuleRead.model_validate(r) for r in await service.list_rules(session)]


@router.get(
    "/routing-rules/{category}",
    response_model=RoutingRuleRead,
    summary="One category's rule",
    responses=response_headers(200, ETAG),
)
async def get_routing_rule(
    category: Category, _admin: AdminUser, session: SessionDep, response: Response
) -> RoutingRuleRead:
    rule = await service.get_rule(session, category)
    response.headers[ETAG] = etag(rule.version)
    return RoutingRuleRead.model_validate(rule)


@router.put(
    "/routing-rules/{category}",
    response_model=RoutingRuleRead,
    summary="Route a product category to a team",
    responses={**response_headers(200, ETAG), **response_headers(201, ETAG)},
)
async def save_routing_rule(
    category: Category,
    body: RoutingRuleWrite,
    _admin: AdminUser,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> RoutingRuleRead:
    """New cases of the category alert the team's members (and the supervisors); a case not
    claimed within `claim_within_minutes` alerts the supervisors, again after
    `escalate_again_after_minutes`. Categories without a rule go to every staff member."""
    rule, created = await service.put_rule(uow.session, category, body, version)
    await uow.commit()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers[ETAG] = etag(rule.version)
    return RoutingRuleRead.model_validate(rule)


@router.delete("/routing-rules/{category}", status_code=204, summary="Remove a category's rule")
async def delete_routing_rule(category: Category, _admin: AdminUser, uow: UowDep, version: IfMatch) -> None:
    await service.delete_rule(uow.session, category, version)
    await uow.commit()
