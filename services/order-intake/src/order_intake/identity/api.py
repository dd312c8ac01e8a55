"""Routes: sign-up, token, JWKS, own profile, staff administration."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Query, Request, Response, status

from casebridge_shared.auth import AdminUser, CurrentUser, Department, Role
from casebridge_shared.pagination import Page, PageDep
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.versioning import etag, expected_version
from order_intake.deps import ContainerDep, SessionDep, UowDep, client_ip
from order_intake.identity import service
from order_intake.identity.models import (
    CustomerRegistration,
    ProfileUpdate,
    TokenResponse,
    UserCreate,
    UserRead,
)

router = APIRouter(tags=["identity"], responses=PROBLEM_RESPONSES)


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    summary="Customer self-sign-up",
)
async def register(body: CustomerRegistration, uow: UowDep, response: Response) -> Any:
    user = await service.register_customer(uow, body)
    response.headers["Location"] = "/me"
    response.headers["ETag"] = etag(user.version)
    return user


@router.post("/auth/token", response_model=TokenResponse, summary="OAuth2 password flow")
async def token(
    request: Request,
    uow: UowDep,
    container: ContainerDep,
    username: Annotated[str, Form(min_length=1, max_length=320)],
    password: Annotated[str, Form(min_length=1, max_length=256)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> TokenResponse:
    settings = container.settings
    access_token, expires_in = await service.authenticate(
        uow,
        container.keys,
        email=username,
        password=password,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        lifetime=timedelta(minutes=settings.access_token_minutes),
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    return TokenResponse(access_token=access_token, expires_in=expires_in)


@router.get("/.well-known/jwks.json", summary="Public keys that verify our tokens")
async def jwks(container: ContainerDep, response: Response) -> dict[str, Any]:
    # Re-read after `keys rotate` (signing_key_reload_seconds) so a withdrawn key leaves the set;
    # a cache in between may keep the set this long more (part of the documented bound).
    await container.keys.refresh_if_stale()
    response.headers["Cache-Control"] = "public, max-age=30"
    return container.keys.jwks()


@router.get("/me", response_model=UserRead, summary="My account")
async def read_me(principal: CurrentUser, session: SessionDep, response: Response) -> Any:
    user = await service.get_user(session, principal.subject)
    response.headers["ETag"] = etag(user.version)
    return user


@router.patch("/me", response_model=UserRead, summary="Change my basic data (A3)")
async def update_me(
    principal: CurrentUser,
    body: ProfileUpdate,
    uow: UowDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> Any:
    user = await service.update_profile(
        uow, principal.subject, body, expected_version(if_match, required=False)
    )
    response.headers["ETag"] = etag(user.version)
    return user


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    summary="Create a staff, supervisor, admin or department user (admin)",
)
async def create_user(_admin: AdminUser, body: UserCreate, uow: UowDep) -> Any:
    return await service.create_user(uow, body)


@router.get("/users", response_model=Page[UserRead], summary="List users (admin)")
async def list_users(
    _admin: AdminUser,
    session: SessionDep,
    page: PageDep,
    role: Role | None = None,
    department: Department | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Search email and name")] = None,
) -> Any:
    users, total = await service.list_users(
        session, role=role, department=department, q=q, limit=page.limit, offset=page.offset
    )
    return Page[UserRead](
        items=[UserRead.model_validate(u) for u in users],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
