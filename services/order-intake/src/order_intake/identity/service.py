"""Accounts: sign-up, login, profile, staff administration. No HTTP here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.auth import Department, Role
from casebridge_shared.db import utcnow
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import (
    Conflict,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from casebridge_shared.versioning import check_version
from order_intake.identity import events, throttle
from order_intake.identity.keys import KeyStore
from order_intake.identity.models import (
    CustomerRegistration,
    ProfileUpdate,
    User,
    UserCreate,
)
from order_intake.identity.passwords import password_problem

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("casebridge-timing-equaliser")
LOGIN_REFUSED = "wrong email or password"


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
    throttled like guessing passwords (docs/decisions.md "Identity").
    """
    keys: dict[str, throttle.Scope] = {}
    if client_ip and throttle_policy is not None:
        keys = {throttle.address_key(client_ip[:90]): "address"}
        await throttle.count_attempt(uow.session, throttle_policy, keys, utcnow())
        await uow.commit()
    user = User(
        email=normalise_email(data.email),
        password_hash=await hash_password(data.password),
        full_name=data.full_name.strip(),
        phone=data.phone,
        roles=[Role.CUSTOMER.value],
    )
    await _add_user(uow, user)
    if throttle_policy is not None and keys:
        await throttle.take_back(uow.session, throttle_policy, keys, utcnow())
    await uow.commit()
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
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": user.id,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "roles": list(user.roles),
        "email": user.email,
        "name": user.full_name,
    }
    if user.department:
        claims["department"] = user.department
    return keys.sign(claims)


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
        key=user.id if user else f"email:{email[:300]}",
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
    client_ip: str | None,
    user_agent: str | None,
    throttle_policy: throttle.ThrottlePolicy | None = None,
) -> tuple[str, int]:
    """Check the password; on success return (token, seconds valid). Every attempt is recorded.

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
    return token, int(lifetime.total_seconds())


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
    if "password" in changes:
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
        if changes["full_name"] is None:
            raise Unprocessable("full_name cannot be empty", field="body.full_name")
        user.full_name = changes["full_name"].strip()
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
