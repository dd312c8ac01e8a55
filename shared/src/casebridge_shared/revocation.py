"""Disabled users and revoked sessions, refused by every service within a bound (issue 25).

Every service verifies tokens locally, so a token stays valid until it expires
unless each service also knows whom the issuer has shut out. order-intake
publishes ``user-disabled``, ``user-enabled`` and ``sessions-revoked`` on
``casebridge.identity.v1`` (user id, whether the account is active, the time
before which its tokens are no longer accepted, the user's version); every
service keeps the latest per user in its own ``identity_revocations`` table (fed
by its consumer; order-intake writes it in the same transaction as the change)
and the shared auth dependency checks each request against it.

The check reads the whole (small: only users ever disabled or revoked) table
into the process at most every ``revocation_refresh_seconds`` (5), so requests
cost no query. Bound: an admin's change is refused everywhere after the relay,
the broker and the consumer (well under a second when the workers run) plus
that refresh: 60 s is the documented promise (ADR-0024).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from casebridge_shared.auth import Principal
from casebridge_shared.db import Database, UTCDateTime, utcnow
from casebridge_shared.events import CloudEvent, EventReader, published_by
from casebridge_shared.inbox import Handler
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Unauthorized

log = structlog.get_logger(__name__)

USER_DISABLED = "casebridge.identity.user-disabled.v1"
USER_ENABLED = "casebridge.identity.user-enabled.v1"
SESSIONS_REVOKED = "casebridge.identity.sessions-revoked.v1"
# A machine client (client credentials grant) disabled, or its secret rotated: its tokens are
# refused like a disabled user's (the client's id is their subject).
MACHINE_CLIENT_DISABLED = "casebridge.identity.machine-client-disabled.v1"
MACHINE_CLIENT_SECRET_ROTATED = "casebridge.identity.machine-client-secret-rotated.v1"  # noqa: S105
ACCESS_EVENTS = (
    USER_DISABLED,
    USER_ENABLED,
    SESSIONS_REVOKED,
    MACHINE_CLIENT_DISABLED,
    MACHINE_CLIENT_SECRET_ROTATED,
)

DISABLED = "this account is disabled"
REVOKED = "this session was revoked; sign in again"


class AccessChanged(EventReader):
    """What every service reads from the three access events (a tolerant reader)."""

    user_id: str
    active: bool
    sessions_not_before: datetime | None = None
    version: int


def revocations_table(metadata: MetaData) -> Table:
    return Table(
        "identity_revocations",
        metadata,
        Column("user_id", String(36), primary_key=True),
        Column("active", Boolean, nullable=False),
        # Tokens issued (``iat``) before this are refused; None: no session revoked.
        Column("sessions_not_before", UTCDateTime, nullable=True),
        Column("version", Integer, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )


async def record(uow: UnitOfWork, table: Table, change: AccessChanged) -> None:
    """Keep ``change`` unless a newer one for the user is kept already (events may arrive late)."""
    values: dict[str, Any] = {
        "active": change.active,
        "sessions_not_before": change.sessions_not_before,
        "version": change.version,
        "updated_at": utcnow(),
    }
    kept = (
        await uow.session.execute(select(table.c.version).where(table.c.user_id == change.user_id))
    ).scalar_one_or_none()
    if kept is None:
        await uow.session.execute(insert(table).values(user_id=change.user_id, **values))
    elif kept < change.version:
        await uow.session.execute(update(table).where(table.c.user_id == change.user_id).values(**values))


def handlers(table: Table) -> dict[str, Handler]:
    """The consumer handlers that keep ``table`` from the access events."""

    async def access_changed(uow: UnitOfWork, _event: CloudEvent, change: AccessChanged) -> None:
        await record(uow, table, change)

    return dict.fromkeys(ACCESS_EVENTS, access_changed)


PAYLOAD_MODELS: dict[str, type[EventReader]] = dict.fromkeys(ACCESS_EVENTS, AccessChanged)
# Only the token issuer disables users and revokes sessions.
SOURCES: dict[str, str] = published_by("order-intake", *ACCESS_EVENTS)


@dataclass(frozen=True)
class _Entry:
    active: bool
    # Epoch seconds. ``iat`` is whole seconds: a token issued in the second of the revocation is
    # refused (``iat < ceil``), and order-intake issues later ones with ``iat`` >= that ceiling.
    not_before: float | None


def next_cutoff(previous: datetime | None, now: datetime) -> datetime:
    """The time before which tokens are refused, for a revocation made at ``now``.

    Tokens carry whole seconds (``iat``), and one issued after the previous cut-off says at least
    that cut-off's next whole second, which may be ahead of ``now``: a second revocation within
    that same second must cut past it, or the tokens issued between the two would survive it.
    (Refresh tokens created in the gap are refused too: the person signs in again.)"""
    if previous is None:
        return now
    carried = math.ceil(previous.timestamp())  # the iat of a token issued after ``previous``
    if math.ceil(now.timestamp()) > carried:
        return now
    return datetime.fromtimestamp(carried + 0.001, tz=now.tzinfo or UTC)


class RevocationList:
    """The service's ``identity_revocations`` in process, re-read at most every ``refresh_seconds``."""

    def __init__(
        self,
        db: Database,
        table: Table,
        *,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._table = table
        self._refresh = refresh_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Read the table again on the next check (this process just changed it)."""
        self._read_at = -math.inf

    async def _current(self) -> dict[str, _Entry]:
        if self._entries is not None and self._clock() - self._read_at < self._refresh:
            return self._entries
        async with self._lock:
            if self._entries is not None and self._clock() - self._read_at < self._refresh:
                return self._entries
            started = self._clock()
            try:
                async with self._db.session() as session:
                    rows = (
                        await session.execute(
                            select(
                                self._table.c.user_id,
                                self._table.c.active,
                                self._table.c.sessions_not_before,
                            )
                        )
                    ).all()
            except (SQLAlchemyError, OSError):
                if self._entries is None:
                    raise
                log.warning("auth.revocations_not_refreshed", exc_info=True)
                return self._entries  # the last ones read; tried again on the next request
            self._entries = {
                user_id: _Entry(active, None if nb is None else nb.timestamp())
                for user_id, active, nb in rows
            }
            self._read_at = started
            return self._entries

    async def check(self, principal: Principal) -> None:
        """Raise 401 if the principal's account is disabled or its session revoked."""
        entry = (await self._current()).get(principal.subject)
        if entry is None:
            return
        if not entry.active:
            raise Unauthorized(DISABLED, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if entry.not_before is not None and (
            principal.issued_at is None or principal.issued_at < math.ceil(entry.not_before)
        ):
            raise Unauthorized(REVOKED, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
