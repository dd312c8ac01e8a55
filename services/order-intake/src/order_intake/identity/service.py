"""Accounts: sign-up, login, profile, staff administration. No HTTP here."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Department, Role
from casebridge_shared.db import new_id, utcnow
from casebridge_shared.outbox import MESSAGE_KEY_MAX, UnitOfWork
from casebridge_shared.problems import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from casebridge_shared.revocation import AccessChanged, next_cutoff, record
from casebridge_shared.versioning import check_version
from order_intake.db import revocations
from order_intake.identity import events, throttle
from order_intake.identity.keys import KeyStore
from order_intake.identity.models import (
    CustomerRegistration,
    PasswordReset,
    ProfileUpdate,
    RefreshToken,
    RolesUpdate,
    User,
    UserCreate,
)
from order_intake.identity.passwords import password_problem

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("casebridge-timing-equaliser")
LOGIN_REFUSED = "wrong email or password"
RESET_REFUSED = "this password-reset link is invalid, expired or already used; ask for a new one"
CURRENT_PASSWORD_WRONG = "the current password is wrong"  # noqa: S105 (a message, not a secret)
REFRESH_REFUSED = "the refresh token is invalid, expired or revoked; sign in again"
log = structlog.get_logger(__name__)


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _snapshot(user: User) -> dict[str, object]:
    return {
        "user_id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "phone": user.phone,
        "roles": list(user.roles),
        "department": user.department,
        "active": user.active,
        "version": user.version,
    }


def validate_roles(roles: Sequence[Role], department: Department | None) -> None:
    if Role.SERVICE in roles:
        raise Unprocessable("service identities are not user accounts", field="body.roles")
    if Role.CUSTOMER in roles:
        raise Unprocessable("customers sign up themselves via /auth/register", field="body.roles")
    if Role.DEPARTMENT in roles and department is None:
        raise Unprocessable("a department user needs a department", field="body.department")
    if department is not None and Role.DEPARTMENT not in roles:
        raise Unprocessable(
            "only users with the department role belong to a department", field="body.department"
        )


async def _add_user(uow: UnitOfWork, user: User) -> User:
    exists = await uow.session.exec(select(User.id).where(User.email == user.email))
    if exists.first() is not None:
        raise Conflict("an account with this email already exists", field="body.email")
    uow.session.add(user)
    try:
        await uow.session.flush()
    except IntegrityError as exc:  # lost a race with a concurrent sign-up
        raise Conflict("an account with this email already exists", field="body.email") from exc
    uow.emit(events.UserCreated(**_snapshot(user)), key=user.id, version=user.version)
    return user


async def register_customer(
    uow: UnitOfWork,
    data: CustomerRegistration,
    *,
    client_ip: str | None = None,
    throttle_policy: throttle.ThrottlePolicy | None = None,
) -> User:
    """Sign a customer up; an email that has an account already is a 409.

    With a client address and a policy, the attempt counts against the address
    like a failed login unless it creates an account, so trying emails here is
    throttled like guessing passwords (ADR-0008).
    """
    attempt = await count_sign_up(uow, client_ip=client_ip, throttle_policy=throttle_policy)
    user = await add_customer(uow, data)
    await attempt.take_back(uow)
    await uow.commit()
    return user


@dataclass(frozen=True)
class SignUpAttempt:
    """A sign-up counted against the caller's address (ADR-0008), until it creates an account."""

    keys: dict[str, throttle.Scope]
    policy: throttle.ThrottlePolicy | None

    async def take_back(self, uow: UnitOfWork) -> None:
        """It created an account (or answered the one a retry created): it does not count."""
        if self.policy is not None and self.keys:
            await throttle.take_back(uow.session, self.policy, self.keys, utcnow())


async def count_sign_up(
    uow: UnitOfWork, *, client_ip: str | None, throttle_policy: throttle.ThrottlePolicy | None
) -> SignUpAttempt:
    """Count the attempt first, committed: a refused sign-up (409) rolls back, the count stays."""
    keys: dict[str, throttle.Scope] = {}
    if client_ip and throttle_policy is not None:
        keys = {throttle.address_key(client_ip[:90]): "address"}
        await throttle.count_attempt(uow.session, throttle_policy, keys, utcnow())
        await uow.commit()
    return SignUpAttempt(keys, throttle_policy)


async def add_customer(uow: UnitOfWork, data: CustomerRegistration) -> User:
    """The customer's account, added to ``uow`` (not committed)."""
    user = User(
        email=normalise_email(data.email),
        password_hash=await hash_password(data.password),
        full_name=data.full_name.strip(),
        phone=data.phone,
        roles=[Role.CUSTOMER.value],
    )
    await _add_user(uow, user)
    return user


async def create_user(uow: UnitOfWork, data: UserCreate) -> User:
    validate_roles(data.roles, data.department)
    user = User(
        email=normalise_email(data.email),
        password_hash=await hash_password(data.password),
        full_name=data.full_name.strip(),
        phone=data.phone,
        roles=sorted({r.value for r in data.roles}),
        department=data.department.value if data.department else None,
    )
    await _add_user(uow, user)
    await uow.commit()
    return user


def issue_token(
    keys: KeyStore, user: User, *, issuer: str, audience: str, lifetime: timedelta, now: datetime
) -> str:
    issued_at = int(now.timestamp())
    if user.sessions_not_before is not None:
        # Services refuse iat < ceil(sessions_not_before) (whole seconds, casebridge_shared.revocation):
        # a token issued in the second of a revocation, after it, says the next second.
        issued_at = max(issued_at, math.ceil(user.sessions_not_before.timestamp()))
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": user.id,
        "iat": issued_at,
        "nbf": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "roles": list(user.roles),
        "email": user.email,
        "name": user.full_name,
    }
    if user.department:
        claims["department"] = user.department
    return keys.sign(claims)


# The machine clients that may take a service token (OAuth2 client credentials, RFC 6749 4.4):
# case-handling fetching customers' order files (issue 26). Its secret is the
# ``service_client_secret`` setting (the same name on both sides).
SERVICE_CLIENTS = frozenset({"case-handling"})


def issue_service_token(
    keys: KeyStore,
    *,
    client_id: str,
    client_secret: str,
    expected_secret: str | None,
    issuer: str,
    audience: str,
    lifetime: timedelta,
    now: datetime,
) -> str:
    """A short service token for one of our own services, or 401 (which client, or that no
    secret is set here, is not said)."""
    known = client_id in SERVICE_CLIENTS and expected_secret is not None
    # Compared in constant time whatever the client id, so timing does not tell which exist.
    matches = hmac.compare_digest(client_secret.encode(), (expected_secret or "\0" * 32).encode())
    if not (known and matches):
        raise Unauthorized("invalid client credentials", headers={"WWW-Authenticate": "Basic"})
    return keys.sign(
        {
            "iss": issuer,
            "aud": audience,
            "sub": f"service:{client_id}",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + lifetime).timestamp()),
            "roles": [Role.SERVICE.value],
            "name": client_id,
        }
    )


def _login_failed(
    uow: UnitOfWork,
    user: User | None,
    email: str,
    reason: str,
    client_ip: str | None,
    user_agent: str | None,
    at: datetime,
) -> None:
    uow.emit(
        events.LoginFailed(
            user_id=user.id if user else None,
            email=email[:320],
            reason=reason,
            client_ip=client_ip,
            user_agent=user_agent,
            at=at,
        ),
        # An unknown (possibly made-up, up to 320 characters) email: cut to what the outbox holds.
        key=user.id if user else f"email:{email}"[:MESSAGE_KEY_MAX],
        version=user.version if user else 0,
    )


async def authenticate(
    uow: UnitOfWork,
    keys: KeyStore,
    *,
    email: str,
    password: str,
    issuer: str,
    audience: str,
    lifetime: timedelta,
    refresh_lifetime: timedelta,
    client_ip: str | None,
    user_agent: str | None,
    throttle_policy: throttle.ThrottlePolicy | None = None,
) -> TokenPair:
    """Check the password; on success a new session (access and refresh token). Every attempt is recorded.

    Throttled (429) while the account or the client address has failed too often
    (identity/throttle.py); the attempt is counted before the password is checked.
    """
    email = normalise_email(email)
    policy = throttle_policy or throttle.ThrottlePolicy()
    throttle_keys = throttle.keys_for(email, client_ip)
    try:
        await throttle.count_attempt(uow.session, policy, throttle_keys, utcnow())
    except TooManyRequests:
        await uow.session.rollback()
        known = (await uow.session.exec(select(User).where(User.email == email))).first()
        _login_failed(uow, known, email, "throttled", client_ip, user_agent, utcnow())
        await uow.commit()
        raise
    await uow.commit()
    await keys.refresh_if_stale()
    user = (await uow.session.exec(select(User).where(User.email == email))).first()
    ok = await _password_matches(user.password_hash if user else _DUMMY_HASH, password)
    now = utcnow()
    if user is None or not ok or not user.active:
        reason = "unknown user" if user is None else ("inactive" if ok else "wrong password")
        await throttle.forget_old(uow.session, policy, now)
        _login_failed(uow, user, email, reason, client_ip, user_agent, now)
        await uow.commit()
        raise Unauthorized(LOGIN_REFUSED, headers={"WWW-Authenticate": "Bearer"})
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
        uow.session.add(user)
    await throttle.take_back(uow.session, policy, throttle_keys, now)
    token = issue_token(keys, user, issuer=issuer, audience=audience, lifetime=lifetime, now=now)
    refresh_token = _new_refresh_token(uow, user, family_id=new_id(), lifetime=refresh_lifetime, now=now)
    uow.emit(
        events.LoginSucceeded(
            user_id=user.id,
            email=user.email,
            roles=list(user.roles),
            department=user.department,
            client_ip=client_ip,
            user_agent=user_agent,
            at=now,
        ),
        key=user.id,
        version=user.version,
    )
    await uow.commit()
    return TokenPair(
        token, int(lifetime.total_seconds()), refresh_token, int(refresh_lifetime.total_seconds())
    )


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


def _digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def _new_refresh_token(
    uow: UnitOfWork, user: User, *, family_id: str, lifetime: timedelta, now: datetime
) -> str:
    """A new opaque refresh token of ``family_id`` (one family per sign-in); only its SHA-256 is stored."""
    token = secrets.token_urlsafe(32)
    uow.session.add(
        RefreshToken(
            token_hash=_digest(token),
            family_id=family_id,
            user_id=user.id,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


async def _revoke_refresh_tokens(uow: UnitOfWork, now: datetime, condition: Any) -> None:
    await uow.session.execute(
        update(RefreshToken).where(col(RefreshToken.revoked_at).is_(None), condition).values(revoked_at=now)
    )


async def refresh(
    uow: UnitOfWork,
    keys: KeyStore,
    *,
    refresh_token: str,
    issuer: str,
    audience: str,
    lifetime: timedelta,
    refresh_lifetime: timedelta,
) -> TokenPair:
    """The refresh_token grant: a new access token and a new refresh token replacing the one used.

    A refresh token is good for one use. Presented again, it was copied: its whole family (the
    session it belongs to) is revoked, so neither the thief nor the user can go on with it
    (RFC 9700 section 4.14.2); the user signs in again.
    """
    await keys.refresh_if_stale()
    now = utcnow()
    refused = Unauthorized(REFRESH_REFUSED, field="body.refresh_token")
    stored = (
        await uow.session.exec(select(RefreshToken).where(RefreshToken.token_hash == _digest(refresh_token)))
    ).first()
    if stored is None or stored.revoked_at is not None:
        raise refused
    # Taking it is one conditional UPDATE, so of two requests racing with the same token one wins
    # and the other is a reuse.
    taken: Any = await uow.session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.id) == stored.id, col(RefreshToken.used_at).is_(None))
        .values(used_at=now)
    )
    if taken.rowcount != 1:
        await _revoke_refresh_tokens(uow, now, col(RefreshToken.family_id) == stored.family_id)
        await uow.commit()
        log.warning("identity.refresh_token_reused", user_id=stored.user_id, family_id=stored.family_id)
        raise refused
    user = await uow.session.get(User, stored.user_id)
    if (
        stored.expires_at <= now
        or user is None
        or not user.active
        or (user.sessions_not_before is not None and stored.created_at < user.sessions_not_before)
    ):
        raise refused  # nothing written: the UPDATE is rolled back with the unit of work
    token = issue_token(keys, user, issuer=issuer, audience=audience, lifetime=lifetime, now=now)
    new_refresh = _new_refresh_token(
        uow, user, family_id=stored.family_id, lifetime=refresh_lifetime, now=now
    )
    await uow.commit()
    return TokenPair(token, int(lifetime.total_seconds()), new_refresh, int(refresh_lifetime.total_seconds()))


async def revoke_refresh_token(uow: UnitOfWork, refresh_token: str) -> bool:
    """Sign-out (RFC 7009): the refresh token's session (its whole family) is refused from now on.

    True when the token was known. The access token already handed out stays valid until it
    expires (minutes), like any bearer token; ``revoke_sessions`` ends those too."""
    stored = (
        await uow.session.exec(select(RefreshToken).where(RefreshToken.token_hash == _digest(refresh_token)))
    ).first()
    if stored is None:
        return False
    await _revoke_refresh_tokens(uow, utcnow(), col(RefreshToken.family_id) == stored.family_id)
    await uow.commit()
    return True


async def _change_access(
    uow: UnitOfWork,
    user: User,
    event: type[events.AccessSnapshot],
    *,
    active: bool,
    revoke_sessions: bool,
) -> User:
    """Disable, enable or revoke: the user row, the refresh tokens, this service's revocation list
    and the event every other service keeps, in one transaction."""
    now = utcnow()
    user.active = active
    if revoke_sessions:
        user.sessions_not_before = next_cutoff(user.sessions_not_before, now)
        await _revoke_refresh_tokens(uow, now, col(RefreshToken.user_id) == user.id)
    user.version += 1
    user.updated_at = now
    uow.session.add(user)
    await record(
        uow,
        revocations,
        AccessChanged(
            user_id=user.id,
            active=user.active,
            sessions_not_before=user.sessions_not_before,
            version=user.version,
        ),
    )
    uow.emit(
        event(**_snapshot(user), sessions_not_before=user.sessions_not_before),
        key=user.id,
        version=user.version,
    )
    await uow.commit()
    return user


async def _user(uow: UnitOfWork, user_id: str) -> User:
    user = await uow.session.get(User, user_id)
    if user is None:
        raise NotFound("no such user", field="path.user_id")
    return user


async def disable_user(uow: UnitOfWork, user_id: str, *, by: str) -> User:
    """The user can no longer sign in, and every service refuses their tokens (within 60 s)."""
    if user_id == by:
        raise Conflict("an admin cannot disable their own account", field="path.user_id")
    user = await _user(uow, user_id)
    if not user.active:
        return user  # already disabled: nothing changes
    return await _change_access(uow, user, events.UserDisabled, active=False, revoke_sessions=True)


async def enable_user(uow: UnitOfWork, user_id: str) -> User:
    """The user can sign in again; tokens from before they were disabled stay refused."""
    user = await _user(uow, user_id)
    if user.active:
        return user
    return await _change_access(uow, user, events.UserEnabled, active=True, revoke_sessions=False)


async def revoke_sessions(uow: UnitOfWork, user_id: str) -> User:
    """Every token and refresh token the user holds now is refused; they sign in again."""
    user = await _user(uow, user_id)
    return await _change_access(uow, user, events.SessionsRevoked, active=user.active, revoke_sessions=True)


async def change_roles(
    uow: UnitOfWork, user_id: str, data: RolesUpdate, expected_version: int | None, *, by: str
) -> User:
    """Set a staff account's roles and department (RolesChanged).

    Tokens carry the roles they were issued with, so when a role or the department is
    taken away the user's sessions are revoked in the same transaction (SessionsRevoked):
    the old rights stop within the revocation bound instead of living on until the
    token expires. Adding a role needs no revocation: the next refresh carries it.
    """
    validate_roles(data.roles, data.department)
    user = await _user(uow, user_id)
    if Role.CUSTOMER.value in user.roles:
        raise Conflict("a customer account's roles cannot be changed", field="path.user_id")
    check_version(user.version, expected_version)
    roles = sorted({r.value for r in data.roles})
    department = data.department.value if data.department else None
    if user_id == by and Role.ADMIN.value not in roles:
        raise Conflict("an admin cannot take the admin role from their own account", field="body.roles")
    if roles == sorted(user.roles) and department == user.department:
        return user  # nothing changes: no event
    lost = bool(set(user.roles) - set(roles)) or (
        user.department is not None and department != user.department
    )
    user.roles = roles
    user.department = department
    user.version += 1
    user.updated_at = utcnow()
    uow.session.add(user)
    uow.emit(events.RolesChanged(**_snapshot(user)), key=user.id, version=user.version)
    if lost:
        return await _change_access(
            uow, user, events.SessionsRevoked, active=user.active, revoke_sessions=True
        )
    await uow.commit()
    return user


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


async def update_profile(
    uow: UnitOfWork, user_id: str, data: ProfileUpdate, expected_version: int | None
) -> User:
    user = await uow.session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    check_version(user.version, expected_version)
    changes = data.model_dump(exclude_unset=True)
    password_changed = "password" in changes
    if password_changed:
        if not data.current_password or not await _password_matches(
            user.password_hash, data.current_password
        ):
            raise Unprocessable(
                "current_password is required and must match to set a new password",
                field="body.current_password",
            )
        problem = password_problem(changes["password"], user.email)
        if problem is not None:
            raise Unprocessable(problem, field="body.password")
        user.password_hash = await hash_password(changes.pop("password"))
    changes.pop("current_password", None)
    if "full_name" in changes:
        # Blank is empty: a name of spaces would show as no name at all.
        if changes["full_name"] is None or not changes["full_name"].strip():
            raise Unprocessable("full_name cannot be empty", field="body.full_name")
        changes["full_name"] = changes["full_name"].strip()
    if "phone" in changes and changes["phone"] is not None:
        changes["phone"] = changes["phone"].strip()
    if not password_changed and all(getattr(user, k) == v for k, v in changes.items()):
        return user  # nothing changes: no new version, no event
    if "full_name" in changes:
        user.full_name = changes["full_name"]
    if "phone" in changes:
        user.phone = changes["phone"]
    user.version += 1
    user.updated_at = utcnow()
    uow.session.add(user)
    uow.emit(events.UserUpdated(**_snapshot(user)), key=user.id, version=user.version)
    await uow.commit()
    return user


async def list_users(
    session: AsyncSession,
    *,
    role: Role | None,
    department: Department | None,
    q: str | None,
    limit: int,
    offset: int,
) -> tuple[list[User], int]:
    query = select(User)
    if department is not None:
        query = query.where(User.department == department.value)
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(col(User.email).like(pattern) | func.lower(col(User.full_name)).like(pattern))
    users = list((await session.exec(query.order_by(col(User.created_at), col(User.id)))).all())
    if role is not None:
        # Roles live in a JSON list; filtering in Python keeps SQLite and PostgreSQL alike.
        users = [u for u in users if role.value in u.roles]
    return users[offset : offset + limit], len(users)


async def ensure_bootstrap_admin(uow: UnitOfWork, email: str, password: str) -> User | None:
    """Create the first admin from settings, once. Returns it if it was created."""
    existing = (await uow.session.exec(select(User).where(User.email == normalise_email(email)))).first()
    if existing is not None:
        return None
    user = User(
        email=normalise_email(email),
        password_hash=await hash_password(password),
        full_name="Administrator",
        roles=[Role.ADMIN.value],
    )
    await _add_user(uow, user)
    await uow.commit()
    return user


# --- Password reset and change ---------------------------------------------


@dataclass(frozen=True)
class ResetLink:
    """A password-reset link to mail: the token exists in clear only here (the database has its hash)."""

    email: str
    full_name: str
    token: str


def reset_throttle_key(email: str) -> str:
    # Its own counter: asking for reset links must not lock the account's sign-in.
    return f"reset:{email[:300]}"


async def _burn_reset_links(uow: UnitOfWork, user_id: str, now: datetime) -> None:
    await uow.session.execute(
        update(PasswordReset)
        .where(col(PasswordReset.user_id) == user_id, col(PasswordReset.used_at).is_(None))
        .values(used_at=now)
    )


async def request_password_reset(
    uow: UnitOfWork,
    email: str,
    *,
    lifetime: timedelta,
    client_ip: str | None,
    throttle_policy: throttle.ThrottlePolicy,
) -> ResetLink | None:
    """A new single-use reset link for the active account with this email, or None if there is none.

    The caller answers the same either way (no account enumeration). Every request counts
    against the email and the client address like a login attempt (429 when they asked too
    often), whether or not the account exists; a new link replaces the account's older ones.
    """
    address = normalise_email(email)
    keys: dict[str, throttle.Scope] = {reset_throttle_key(address): "account"}
    if client_ip:
        keys[throttle.address_key(client_ip[:90])] = "address"
    now = utcnow()
    await throttle.count_attempt(uow.session, throttle_policy, keys, now)
    await uow.commit()
    user = (await uow.session.exec(select(User).where(User.email == address))).first()
    if user is None or not user.active:
        return None
    await _burn_reset_links(uow, user.id, now)
    token = secrets.token_urlsafe(32)
    uow.session.add(
        PasswordReset(token_hash=_digest(token), user_id=user.id, created_at=now, expires_at=now + lifetime)
    )
    await uow.commit()
    log.info("identity.password_reset_requested", user_id=user.id)  # never the token
    return ResetLink(email=user.email, full_name=user.full_name, token=token)


async def _set_password(uow: UnitOfWork, user: User, new_password: str, field: str, now: datetime) -> User:
    """The new password, every session and reset link of the user ended, in one transaction."""
    problem = password_problem(new_password, user.email)
    if problem is not None:
        raise Unprocessable(problem, field=field)
    user.password_hash = await hash_password(new_password)
    await _burn_reset_links(uow, user.id, now)
    # The account's failed-login count was about the old password.
    await throttle.forget_account(uow.session, user.email)
    return await _change_access(uow, user, events.SessionsRevoked, active=user.active, revoke_sessions=True)


async def reset_password(uow: UnitOfWork, token: str, new_password: str) -> User:
    """Set a new password with an emailed link's token; the link is burned and every session ends.

    A bad, expired or used token, or a password the policy refuses, changes nothing.
    """
    now = utcnow()
    refused = Unprocessable(RESET_REFUSED, field="body.token")
    stored = (
        await uow.session.exec(select(PasswordReset).where(PasswordReset.token_hash == _digest(token)))
    ).first()
    if stored is None or stored.used_at is not None or stored.expires_at <= now:
        raise refused
    user = await uow.session.get(User, stored.user_id)
    if user is None or not user.active:
        raise refused
    problem = password_problem(new_password, user.email)
    if problem is not None:
        raise Unprocessable(problem, field="body.new_password")  # the link stays good for a better one
    # Taking the link is one conditional UPDATE: of two requests racing with it, one wins.
    taken: Any = await uow.session.execute(
        update(PasswordReset)
        .where(col(PasswordReset.id) == stored.id, col(PasswordReset.used_at).is_(None))
        .values(used_at=now)
    )
    if taken.rowcount != 1:
        raise refused
    user = await _set_password(uow, user, new_password, "body.new_password", now)
    log.info("identity.password_reset", user_id=user.id)
    return user


async def change_password(
    uow: UnitOfWork,
    user_id: str,
    *,
    current_password: str,
    new_password: str,
    client_ip: str | None,
    throttle_policy: throttle.ThrottlePolicy,
) -> User:
    """A signed-in user changes their password: the current one must match (counted like a login,
    so a stolen session cannot guess it); then every session ends, this one too."""
    user = await uow.session.get(User, user_id)
    if user is None or not user.active:
        raise NotFound("no such user")
    keys = throttle.keys_for(user.email, client_ip)
    await throttle.count_attempt(uow.session, throttle_policy, keys, utcnow())
    await uow.commit()
    if not await _password_matches(user.password_hash, current_password):
        raise Forbidden(CURRENT_PASSWORD_WRONG, field="body.current_password")
    if new_password == current_password:
        raise Unprocessable("the new password must differ from the current one", field="body.new_password")
    now = utcnow()
    await throttle.take_back(uow.session, throttle_policy, keys, now)
    return await _set_password(uow, user, new_password, "body.new_password", now)
