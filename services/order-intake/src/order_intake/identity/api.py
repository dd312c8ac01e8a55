"""Routes: sign-up, token, JWKS, own profile, staff administration."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Header, Query, Request, Response, status
from pydantic import BaseModel

from casebridge_shared.auth import AdminUser, CurrentUser, Department, Role
from casebridge_shared.db import utcnow
from casebridge_shared.pagination import Page, PageDep
from casebridge_shared.problems import PROBLEM_RESPONSES, Unprocessable
from casebridge_shared.versioning import etag, expected_version
from order_intake.deps import ContainerDep, SessionDep, UowDep, client_ip
from order_intake.identity import mail, service
from order_intake.identity.models import (
    CustomerRegistration,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
    ProfileUpdate,
    TokenResponse,
    UserCreate,
    UserRead,
)
from order_intake.identity.throttle import ThrottlePolicy

router = APIRouter(tags=["identity"], responses=PROBLEM_RESPONSES)


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    summary="Customer self-sign-up",
    responses={429: {"description": "Too many failed logins or sign-ups from this address (Retry-After)"}},
)
async def register(
    body: CustomerRegistration, request: Request, uow: UowDep, container: ContainerDep, response: Response
) -> Any:
    user = await service.register_customer(
        uow,
        body,
        client_ip=client_ip(request),
        throttle_policy=ThrottlePolicy.from_settings(container.settings),
    )
    response.headers["Location"] = "/me"
    response.headers["ETag"] = etag(user.version)
    return user


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    summary=(
        "OAuth2 password grant, the refresh_token grant (the refresh token rotates on every use), "
        "and client_credentials for our own services"
    ),
    responses={429: {"description": "Too many failed logins for this account or address (Retry-After)"}},
)
async def token(
    request: Request,
    uow: UowDep,
    container: ContainerDep,
    response: Response,
    username: Annotated[str | None, Form(min_length=1, max_length=320)] = None,
    password: Annotated[str | None, Form(min_length=1, max_length=256)] = None,
    grant_type: Annotated[str | None, Form(pattern="^(password|refresh_token|client_credentials)$")] = None,
    refresh_token: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
    client_id: Annotated[str | None, Form(min_length=1, max_length=100)] = None,
    client_secret: Annotated[str | None, Form(min_length=1, max_length=256)] = None,
) -> TokenResponse:
    settings = container.settings
    lifetimes: dict[str, Any] = {
        "issuer": settings.token_issuer,
        "audience": settings.token_audience,
        "lifetime": timedelta(minutes=settings.access_token_minutes),
        "refresh_lifetime": timedelta(days=settings.refresh_token_days),
    }
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 section 5.1
    if grant_type == "client_credentials":
        if client_id is None or client_secret is None:
            raise Unprocessable(
                "the client_credentials grant needs a client_id and a client_secret",
                field="body.client_id" if client_id is None else "body.client_secret",
            )
        lifetime = timedelta(minutes=settings.service_token_minutes)
        access = service.issue_service_token(
            container.keys,
            client_id=client_id,
            client_secret=client_secret,
            expected_secret=settings.service_client_secret_value,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            lifetime=lifetime,
            now=utcnow(),
        )
        return TokenResponse(access_token=access, expires_in=int(lifetime.total_seconds()))
    if grant_type == "refresh_token":
        if refresh_token is None:
            raise Unprocessable("the refresh_token grant needs a refresh_token", field="body.refresh_token")
        pair = await service.refresh(uow, container.keys, refresh_token=refresh_token, **lifetimes)
    else:
        if username is None or password is None:
            raise Unprocessable(
                "the password grant needs a username and a password",
                field="body.username" if username is None else "body.password",
            )
        pair = await service.authenticate(
            uow,
            container.keys,
            email=username,
            password=password,
            client_ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
            throttle_policy=ThrottlePolicy.from_settings(settings),
            **lifetimes,
        )
    return TokenResponse(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        refresh_expires_in=pair.refresh_expires_in,
    )


class Accepted(BaseModel):
    detail: str


RESET_ACCEPTED = "If an account has this email, a link to choose a new password is on its way."


@router.post(
    "/auth/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Email me a link to reset my password (the same answer whether or not the account exists)",
    responses={429: {"description": "Asked too often for this email or from this address (Retry-After)"}},
)
async def request_password_reset(
    body: PasswordResetRequest, request: Request, uow: UowDep, container: ContainerDep, tasks: BackgroundTasks
) -> Accepted:
    settings = container.settings
    link = await service.request_password_reset(
        uow,
        body.email,
        lifetime=timedelta(minutes=settings.password_reset_minutes),
        client_ip=client_ip(request),
        throttle_policy=ThrottlePolicy.from_settings(settings),
    )
    if link is not None:
        # Sent after the answer, so its time does not tell whether the account exists.
        message = mail.password_reset_message(
            settings,
            email=link.email,
            full_name=link.full_name,
            link=f"{settings.portal_url.rstrip('/')}/portal/reset-password?token={link.token}",
            minutes=settings.password_reset_minutes,
        )
        tasks.add_task(mail.send, settings, message, purpose="password-reset")
    return Accepted(detail=RESET_ACCEPTED)


@router.post(
    "/auth/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Choose a new password with the emailed link's token; every session of the account ends",
)
async def confirm_password_reset(body: PasswordResetConfirm, uow: UowDep, request: Request) -> Response:
    await service.reset_password(uow, body.token, body.new_password)
    request.app.state.revocations.invalidate()  # this api refuses the old tokens at once
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/revoke",
    summary="Revoke a refresh token (RFC 7009): its session can no longer be refreshed (sign-out)",
)
async def revoke(
    uow: UowDep,
    response: Response,
    token: Annotated[str, Form(min_length=1, max_length=200)],
    token_type_hint: Annotated[str | None, Form(max_length=40)] = None,
) -> dict[str, str]:
    # 200 whether or not the token was known (RFC 7009 section 2.2): nothing to learn by probing.
    await service.revoke_refresh_token(uow, token)
    response.headers["Cache-Control"] = "no-store"
    return {"status": "revoked"}


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
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change my password: the current one must match; every session ends (sign in again)",
    responses={429: {"description": "Too many wrong current passwords (Retry-After)"}},
)
async def change_my_password(
    principal: CurrentUser, body: PasswordChange, uow: UowDep, container: ContainerDep, request: Request
) -> Response:
    await service.change_password(
        uow,
        principal.subject,
        current_password=body.current_password,
        new_password=body.new_password,
        client_ip=client_ip(request),
        throttle_policy=ThrottlePolicy.from_settings(container.settings),
    )
    request.app.state.revocations.invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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


@router.post(
    "/users/{user_id}/disable",
    response_model=UserRead,
    summary="Disable a user: no sign-in, and every service refuses their tokens within 60 s (admin)",
)
async def disable_user(
    admin: AdminUser, user_id: str, uow: UowDep, request: Request, response: Response
) -> Any:
    user = await service.disable_user(uow, user_id, by=admin.subject)
    request.app.state.revocations.invalidate()  # this api refuses at once; other replicas within the bound
    response.headers["ETag"] = etag(user.version)
    return user


@router.post("/users/{user_id}/enable", response_model=UserRead, summary="Enable a disabled user (admin)")
async def enable_user(
    _admin: AdminUser, user_id: str, uow: UowDep, request: Request, response: Response
) -> Any:
    user = await service.enable_user(uow, user_id)
    request.app.state.revocations.invalidate()
    response.headers["ETag"] = etag(user.version)
    return user


@router.post(
    "/users/{user_id}/revoke-sessions",
    response_model=UserRead,
    summary="Revoke a user's sessions: their tokens are refused everywhere within 60 s (admin)",
)
async def revoke_sessions(
    _admin: AdminUser, user_id: str, uow: UowDep, request: Request, response: Response
) -> Any:
    user = await service.revoke_sessions(uow, user_id)
    request.app.state.revocations.invalidate()
    response.headers["ETag"] = etag(user.version)
    return user
