"""Machine clients and the client credentials grant (RFC 6749 section 4.4). No HTTP here.

Another system (an accounting system exporting the ledger, an integrator managing
webhooks) signs in as itself with a client id and secret and gets a short access
token with the narrow roles an admin gave it; no refresh token (it can always ask
again). The secret is shown once, kept only as its argon2 hash, and can be
rotated; disabling a client or rotating its secret makes every service refuse its
tokens within the 60 s bound of casebridge_shared.revocation.
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import utcnow
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict, NotFound, TooManyRequests, Unauthorized
from casebridge_shared.revocation import AccessChanged, next_cutoff, record
from casebridge_shared.versioning import check_version
from order_intake.db import revocations
from order_intake.identity import events, throttle
from order_intake.identity.keys import KeyStore
from order_intake.identity.models import MachineClient, MachineClientCreate
from order_intake.identity.service import _DUMMY_HASH, SERVICE_CLIENTS, _password_matches, hash_password

# A prefix makes a leaked secret recognisable to secret scanners (and to people).
SECRET_PREFIX = "cbs_"  # noqa: S105 (a prefix, not a secret)
CLIENT_REFUSED = "unknown client, wrong secret, or the client is disabled"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _snapshot(client: MachineClient) -> dict[str, object]:
    return {
        "user_id": client.id,
        "client_id": client.client_id,
        "roles": list(client.roles),
        "active": client.active,
        "sessions_not_before": client.secret_rotated_at if client.version > 1 else None,
        "version": client.version,
    }


async def create(uow: UnitOfWork, data: MachineClientCreate, *, by: str) -> tuple[MachineClient, str]:
    """A new client and its secret (returned once, never stored in clear)."""
    if data.client_id in SERVICE_CLIENTS:
        raise Conflict("this client_id is reserved for one of our own services", field="body.client_id")
    exists = await uow.session.exec(select(MachineClient.id).where(MachineClient.client_id == data.client_id))
    if exists.first() is not None:
        raise Conflict("a machine client with this client_id exists already", field="body.client_id")
    secret = new_secret()
    client = MachineClient(
        client_id=data.client_id,
        description=data.description.strip(),
        secret_hash=await hash_password(secret),
        roles=sorted({r.value for r in data.roles}),
        created_by=by,
    )
    uow.session.add(client)
    try:
        await uow.session.flush()
    except IntegrityError as exc:  # lost a race with the same client_id
        raise Conflict("a machine client with this client_id exists already", field="body.client_id") from exc
    uow.emit(events.MachineClientCreated(**_snapshot(client)), key=client.id, version=client.version)
    await uow.commit()
    return client, secret


async def get(session: AsyncSession, client_id: str) -> MachineClient:
    client = (await session.exec(select(MachineClient).where(MachineClient.client_id == client_id))).first()
    if client is None:
        raise NotFound("no such machine client", field="path.client_id")
    return client


async def list_all(session: AsyncSession) -> list[MachineClient]:
    return list((await session.exec(select(MachineClient).order_by(col(MachineClient.client_id)))).all())


async def _access_changed(
    uow: UnitOfWork, client: MachineClient, event: type[events.MachineClientSnapshot]
) -> None:
    """The change, our revocation list and the event the other services keep: one transaction."""
    client.version += 1
    client.updated_at = utcnow()
    uow.session.add(client)
    snapshot = _snapshot(client)
    await record(
        uow,
        revocations,
        AccessChanged(
            user_id=client.id,
            active=client.active,
            sessions_not_before=client.secret_rotated_at,
            version=client.version,
        ),
    )
    uow.emit(event(**snapshot), key=client.id, version=client.version)
    await uow.commit()


async def rotate_secret(
    uow: UnitOfWork, client_id: str, expected_version: int | None = None
) -> tuple[MachineClient, str]:
    """A new secret; the old one stops working at once and tokens issued with it are refused."""
    client = await get(uow.session, client_id)
    check_version(client.version, expected_version)
    secret = new_secret()
    client.secret_hash = await hash_password(secret)
    client.secret_rotated_at = next_cutoff(client.secret_rotated_at, utcnow())
    await _access_changed(uow, client, events.MachineClientSecretRotated)
    return client, secret


async def disable(uow: UnitOfWork, client_id: str, expected_version: int | None = None) -> MachineClient:
    """No more tokens for the client, and the ones it holds are refused everywhere (within 60 s)."""
    client = await get(uow.session, client_id)
    check_version(client.version, expected_version)
    if not client.active:
        return client
    client.active = False
    client.secret_rotated_at = next_cutoff(client.secret_rotated_at, utcnow())
    await _access_changed(uow, client, events.MachineClientDisabled)
    return client


async def issue_token(
    uow: UnitOfWork,
    keys: KeyStore,
    *,
    client_id: str,
    client_secret: str,
    issuer: str,
    audience: str,
    lifetime: timedelta,
    client_ip: str | None,
    throttle_policy: throttle.ThrottlePolicy,
) -> tuple[str, int]:
    """The client credentials grant: an access token with the client's roles, and its lifetime.

    Failures are throttled like failed logins (per client id and per address), and an unknown
    client costs the same argon2 check as a wrong secret.
    """
    throttle_keys = throttle.keys_for(f"client:{client_id}", client_ip)
    try:
        await throttle.count_attempt(uow.session, throttle_policy, throttle_keys, utcnow())
    except TooManyRequests:
        await uow.session.rollback()
        raise
    await uow.commit()
    await keys.refresh_if_stale()
    client = (
        await uow.session.exec(select(MachineClient).where(MachineClient.client_id == client_id))
    ).first()
    ok = await _password_matches(client.secret_hash if client else _DUMMY_HASH, client_secret)
    now = utcnow()
    if client is None or not ok or not client.active:
        await throttle.forget_old(uow.session, throttle_policy, now)
        await uow.commit()
        raise Unauthorized(CLIENT_REFUSED, headers={"WWW-Authenticate": 'Basic realm="casebridge"'})
    await throttle.take_back(uow.session, throttle_policy, throttle_keys, now)
    await uow.commit()
    return _sign(keys, client, issuer=issuer, audience=audience, lifetime=lifetime, now=now), int(
        lifetime.total_seconds()
    )


def _sign(
    keys: KeyStore, client: MachineClient, *, issuer: str, audience: str, lifetime: timedelta, now: datetime
) -> str:
    # Services refuse iat < ceil(secret_rotated_at) for a rotated client: a token issued in the
    # second of the rotation, after it, says the next second (as identity.service.issue_token).
    issued_at = max(int(now.timestamp()), math.ceil(client.secret_rotated_at.timestamp()))
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": client.id,
        "iat": issued_at,
        "nbf": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "roles": list(client.roles),
        "client_id": client.client_id,
        "name": client.client_id,
    }
    return keys.sign(claims)
