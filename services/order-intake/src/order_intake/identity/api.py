"""Routes: sign-up, token, JWKS, own profile, staff administration."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, BackgroundTasks, Form, Header, Query, Request, Response, status
from pydantic import BaseModel

from casebridge_shared.auth import AdminUser, CurrentUser, Department, Role
from casebridge_shared.db import utcnow
from casebridge_shared.idempotency import Answer, Idempotent, create_once
from casebridge_shared.openapi import ETAG, IDEMPOTENT_REPLAYED, LOCATION, RETRY_AFTER, response_headers
from casebridge_shared.pagination import Page, PageDep
from casebridge_shared.problems import PROBLEM_RESPONSES, Unauthorized, Unprocessable
from casebridge_shared.versioning import IfMatch, IfMatchRequired, etag
from order_intake.db import idempotent_requests
from order_intake.deps import ContainerDep, SessionDep, UowDep, client_ip
from order_intake.identity import clients, mail, service
from order_intake.identity.keys import ALGORITHM
from order_intake.identity.models import (
    CustomerRegistration,
    MachineClientCreate,
    MachineClientRead,
    MachineClientWithSecret,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
    ProfileUpdate,
    RolesUpdate,
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
    responses={
        **response_headers(201, LOCATION, ETAG, IDEMPOTENT_REPLAYED),
        **response_headers(
            429, RETRY_AFTER, description="Too many failed logins or sign-ups from this address (Retry-After)"
        ),
    },
)
async def register_customer(
    body: CustomerRegistration, request: Request, uow: UowDep, container: ContainerDep, idempotent: Idempotent
) -> Any:
    attempt = await service.count_sign_up(
        uow, client_ip=client_ip(request), throttle_policy=ThrottlePolicy.from_settings(container.settings)
    )

    async def create() -> Answer:
        user = await service.add_customer(uow, body)
        await attempt.take_back(uow)
        return Answer.of(201, UserRead.model_validate(user), Location="/me", ETag=etag(user.version))

    # No one is signed in: the key is scoped to the email being registered, which has at
    # most one account. The password is never kept, not even in the fingerprint.
    caller = f"register:{service.normalise_email(str(body.email))}"
    claim = idempotent.claim(idempotent_requests, caller, body, exclude=frozenset({"password"}))
    answer = await create_once(uow, claim, create)
    if answer.replayed:
        # The retry of a sign-up that created the account is no failed attempt either.
        await attempt.take_back(uow)
        await uow.commit()
    return answer.response()


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    summary="OAuth2 token endpoint: the password grant, the refresh_token grant (the refresh token "
    "rotates on every use) and the client_credentials grant for machine clients",
    responses=response_headers(
        429, RETRY_AFTER, description="Too many failed logins for this account or address (Retry-After)"
    ),
)
async def issue_token(
    request: Request,
    uow: UowDep,
    container: ContainerDep,
    response: Response,
    username: Annotated[str | None, Form(min_length=1, max_length=320)] = None,
    password: Annotated[str | None, Form(min_length=1, max_length=256)] = None,
    grant_type: Annotated[str | None, Form(pattern="^(password|refresh_token|client_credentials)$")] = None,
    refresh_token: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
    client_id: Annotated[str | None, Form(min_length=1, max_length=64)] = None,
    client_secret: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> TokenResponse:
    settings = container.settings
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 section 5.1
    if grant_type == "client_credentials":
        cid, secret = _client_credentials(authorization, client_id, client_secret)
        if cid in service.SERVICE_CLIENTS:
            # One of our own services (case-handling fetching customers' files): its secret is a
            # setting both services share, and its token carries the service role only.
            lifetime = timedelta(minutes=settings.service_token_minutes)
            access = service.issue_service_token(
                container.keys,
                client_id=cid,
                client_secret=secret,
                expected_secret=settings.service_client_secret_value,
                issuer=settings.token_issuer,
                audience=settings.token_audience,
                lifetime=lifetime,
                now=utcnow(),
            )
            return TokenResponse(access_token=access, expires_in=int(lifetime.total_seconds()))
        access_token, expires_in = await clients.issue_token(
            uow,
            container.keys,
            client_id=cid,
            client_secret=secret,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            lifetime=timedelta(minutes=settings.client_token_minutes),
            client_ip=client_ip(request),
            throttle_policy=ThrottlePolicy.from_settings(settings),
        )
        return TokenResponse(access_token=access_token, expires_in=expires_in)
    lifetimes: dict[str, Any] = {
        "issuer": settings.token_issuer,
        "audience": settings.token_audience,
        "lifetime": timedelta(minutes=settings.access_token_minutes),
        "refresh_lifetime": timedelta(days=settings.refresh_token_days),
    }
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


@router.post(
    "/auth/revoke",
    summary="Revoke a refresh token (RFC 7009): its session can no longer be refreshed (sign-out)",
)
async def revoke_token(
    uow: UowDep,
    response: Response,
    token: Annotated[str, Form(min_length=1, max_length=200)],
    token_type_hint: Annotated[str | None, Form(max_length=40)] = None,
) -> dict[str, str]:
    # 200 whether or not the token was known (RFC 7009 section 2.2): nothing to learn by probing.
    await service.revoke_refresh_token(uow, token)
    response.headers["Cache-Control"] = "no-store"
    return {"status": "revoked"}


class Accepted(BaseModel):
    detail: str


RESET_ACCEPTED = "If an account has this email, a link to choose a new password is on its way."


@router.post(
    "/auth/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Email me a link to reset my password (the same answer whether or not the account exists)",
    responses=response_headers(
        429, RETRY_AFTER, description="Asked too often for this email or from this address (Retry-After)"
    ),
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


def _client_credentials(
    authorization: str | None, client_id: str | None, client_secret: str | None
) -> tuple[str, str]:
    """The client's id and secret from HTTP Basic (RFC 6749 section 2.3.1: each form-urlencoded)
    or from the form; one way, not both."""
    basic = authorization is not None and authorization[:6].lower() == "basic "
    if basic and (client_id is not None or client_secret is not None):
        raise Unprocessable(
            "send the client credentials either with HTTP Basic or in the form, not both",
            field="body.client_id",
        )
    if basic:
        assert authorization is not None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError, non-ASCII text
            raise Unauthorized(
                "the Basic credentials are not valid base64", headers={"WWW-Authenticate": "Basic"}
            ) from exc
        cid, colon, secret = decoded.partition(":")
        if not colon or not cid or not secret:
            raise Unauthorized(
                "the Basic credentials need a client id and a secret", headers={"WWW-Authenticate": "Basic"}
            )
        return unquote_plus(cid), unquote_plus(secret)
    if client_id is None or client_secret is None:
        raise Unprocessable(
            "the client_credentials grant needs client_id and client_secret (or HTTP Basic)",
            field="body.client_id" if client_id is None else "body.client_secret",
        )
    return client_id, client_secret


def _discovery(request: Request, container: ContainerDep) -> dict[str, Any]:
    settings = container.settings
    issuer = settings.token_issuer.rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/auth/token",
        # No authorization endpoint: there is no browser redirect flow (no code, no implicit),
        # so no response type is supported; tokens come only from the token endpoint.
        "response_types_supported": [],
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "subject_types_supported": ["public"],
        # Required by OpenID Connect Discovery; we issue access tokens (no ID tokens), signed so.
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": [],  # roles come with the account or machine client, not by scope
        "claims_supported": [
            "iss",
            "aud",
            "sub",
            "iat",
            "nbf",
            "exp",
            "roles",
            "department",
            "email",
            "name",
            "client_id",
        ],
        "service_documentation": f"{issuer}/docs",
    }


@router.get(
    "/.well-known/openid-configuration",
    summary="Discovery: where our keys and token endpoint are, and which grants we support",
)
async def openid_configuration(
    request: Request, container: ContainerDep, response: Response
) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return _discovery(request, container)


@router.get(
    "/.well-known/oauth-authorization-server",
    summary="The same metadata for OAuth 2.0 clients (RFC 8414)",
)
async def oauth_metadata(request: Request, container: ContainerDep, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return _discovery(request, container)


@router.post(
    "/machine-clients",
    status_code=status.HTTP_201_CREATED,
    response_model=MachineClientWithSecret,
    summary="Create a machine client for the client credentials grant; its secret is shown only here "
    "(and to a retry with the same Idempotency-Key) (admin)",
    responses=response_headers(201, LOCATION, ETAG, IDEMPOTENT_REPLAYED),
)
async def create_machine_client(
    admin: AdminUser, body: MachineClientCreate, uow: UowDep, container: ContainerDep, idempotent: Idempotent
) -> Any:
    box = container.keys.box

    async def create() -> Answer:
        client, secret = await clients.create(uow, body, by=admin.subject)
        # The answer kept for a retry holds the secret sealed (the signing keys' box, a key
        # kept apart from the database): the idempotent_requests row never has it in the clear.
        created = MachineClientWithSecret(
            **MachineClientRead.model_validate(client).model_dump(), client_secret=box.seal(secret)
        )
        return Answer.of(
            201, created, Location=f"/machine-clients/{client.client_id}", ETag=etag(client.version)
        )

    answer = await create_once(uow, idempotent.claim(idempotent_requests, admin.subject, body), create)
    answer.body = {**answer.body, "client_secret": box.open(answer.body["client_secret"])}
    response = answer.response()
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/machine-clients", response_model=list[MachineClientRead], summary="Machine clients (admin)")
async def list_machine_clients(_admin: AdminUser, session: SessionDep) -> Any:
    return await clients.list_all(session)


@router.get(
    "/machine-clients/{client_id}",
    response_model=MachineClientRead,
    summary="One machine client (admin)",
    responses=response_headers(200, ETAG),
)
async def get_machine_client(
    _admin: AdminUser, client_id: str, session: SessionDep, response: Response
) -> Any:
    client = await clients.get(session, client_id)
    response.headers["ETag"] = etag(client.version)
    return client


@router.post(
    "/machine-clients/{client_id}/rotate-secret",
    response_model=MachineClientWithSecret,
    summary="A new secret, shown only here; the old one and the tokens it got stop working (admin)",
    responses=response_headers(200, ETAG),
)
async def rotate_machine_client_secret(
    _admin: AdminUser, client_id: str, uow: UowDep, request: Request, response: Response, version: IfMatch
) -> Any:
    client, secret = await clients.rotate_secret(uow, client_id, version)
    request.app.state.revocations.invalidate()
    response.headers["Cache-Control"] = "no-store"
    response.headers["ETag"] = etag(client.version)
    return MachineClientWithSecret(
        **MachineClientRead.model_validate(client).model_dump(), client_secret=secret
    )


@router.post(
    "/machine-clients/{client_id}/disable",
    response_model=MachineClientRead,
    summary="Disable a machine client: no more tokens; every service refuses its tokens within 60 s (admin)",
    responses=response_headers(200, ETAG),
)
async def disable_machine_client(
    _admin: AdminUser, client_id: str, uow: UowDep, request: Request, response: Response, version: IfMatch
) -> Any:
    client = await clients.disable(uow, client_id, version)
    request.app.state.revocations.invalidate()
    response.headers["ETag"] = etag(client.version)
    return client


@router.get("/.well-known/jwks.json", summary="Public keys that verify our tokens")
async def read_jwks(container: ContainerDep, response: Response) -> dict[str, Any]:
    # Re-read after `keys rotate` (signing_key_reload_seconds) so a withdrawn key leaves the set;
    # a cache in between may keep the set this long more (part of the documented bound).
    await container.keys.refresh_if_stale()
    response.headers["Cache-Control"] = "public, max-age=30"
    return container.keys.jwks()


@router.get("/me", response_model=UserRead, summary="My account", responses=response_headers(200, ETAG))
async def read_me(principal: CurrentUser, session: SessionDep, response: Response) -> Any:
    user = await service.get_user(session, principal.subject)
    response.headers["ETag"] = etag(user.version)
    return user


@router.patch(
    "/me", response_model=UserRead, summary="Change my basic data (A3)", responses=response_headers(200, ETAG)
)
async def update_me(
    principal: CurrentUser,
    body: ProfileUpdate,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    user = await service.update_profile(uow, principal.subject, body, version)
    response.headers["ETag"] = etag(user.version)
    return user


@router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change my password: the current one must match; every session ends (sign in again)",
    responses=response_headers(
        429, RETRY_AFTER, description="Too many wrong current passwords (Retry-After)"
    ),
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
    responses=response_headers(201, LOCATION, ETAG, IDEMPOTENT_REPLAYED),
)
async def create_user(admin: AdminUser, body: UserCreate, uow: UowDep, idempotent: Idempotent) -> Any:
    async def create() -> Answer:
        user = await service.create_user(uow, body)
        return Answer.of(
            201, UserRead.model_validate(user), Location=f"/users/{user.id}", ETag=etag(user.version)
        )

    # The password is never kept, not even in the key's fingerprint.
    claim = idempotent.claim(idempotent_requests, admin.subject, body, exclude=frozenset({"password"}))
    return (await create_once(uow, claim, create)).response()


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


@router.get(
    "/users/{user_id}",
    response_model=UserRead,
    summary="One user (admin)",
    responses=response_headers(200, ETAG),
)
async def read_user(_admin: AdminUser, user_id: str, session: SessionDep, response: Response) -> Any:
    user = await service.get_user(session, user_id)
    response.headers["ETag"] = etag(user.version)
    return user


@router.put(
    "/users/{user_id}/roles",
    response_model=UserRead,
    summary="Set a staff user's roles and department (admin); taking a right away revokes their sessions",
    responses=response_headers(200, ETAG),
)
async def change_roles(
    admin: AdminUser,
    user_id: str,
    body: RolesUpdate,
    uow: UowDep,
    request: Request,
    response: Response,
    version: IfMatchRequired,
) -> Any:
    user = await service.change_roles(uow, user_id, body, version, by=admin.subject)
    request.app.state.revocations.invalidate()
    response.headers["ETag"] = etag(user.version)
    return user


@router.post(
    "/users/{user_id}/disable",
    response_model=UserRead,
    summary="Disable a user: no sign-in, and every service refuses their tokens within 60 s (admin)",
    responses=response_headers(200, ETAG),
)
async def disable_user(
    admin: AdminUser, user_id: str, uow: UowDep, request: Request, response: Response
) -> Any:
    user = await service.disable_user(uow, user_id, by=admin.subject)
    request.app.state.revocations.invalidate()  # this api refuses at once; other replicas within the bound
    response.headers["ETag"] = etag(user.version)
    return user


@router.post(
    "/users/{user_id}/enable",
    response_model=UserRead,
    summary="Enable a disabled user (admin)",
    responses=response_headers(200, ETAG),
)
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
    responses=response_headers(200, ETAG),
)
async def revoke_sessions(
    _admin: AdminUser, user_id: str, uow: UowDep, request: Request, response: Response
) -> Any:
    user = await service.revoke_sessions(uow, user_id)
    request.app.state.revocations.invalidate()
    response.headers["ETag"] = etag(user.version)
    return user
