"""Login throttling: failed logins per account and per client address, with growing delays.

Every login attempt is counted *before* its password is checked, in a short
transaction of its own, so a burst of parallel guesses is counted in full (not
only those that finished) and no lock is held while the password hash is
computed. A successful login then takes its count back: the account's counter is
reset, the address's is lowered by one. Once a counter reaches its limit within
the window, the key is blocked: further attempts get 429 with ``Retry-After``
without their password being checked or counted, for ``block`` seconds doubling
with each further failure up to ``max_block``. So a stranger who knows an
email can slow its owner down to one attempt per ``max_block`` at most, never
lock them out for longer, and the right password after a block resets it.

The state is rows of ``login_throttles`` in the service's database, shared by
every api process. No HTTP here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared import metrics
from casebridge_shared.db import table_of
from casebridge_shared.problems import TooManyRequests
from order_intake.identity.models import LoginThrottle

log = structlog.get_logger(__name__)

Scope = Literal["account", "address"]
_table = table_of(LoginThrottle)
THROTTLED = "too many failed logins; wait before trying again"


@dataclass(frozen=True)
class ThrottlePolicy:
    failures_per_account: int = 5
    failures_per_address: int = 30
    window: timedelta = timedelta(minutes=15)
    block: timedelta = timedelta(seconds=30)
    max_block: timedelta = timedelta(minutes=5)

    @classmethod
    def from_settings(cls, settings: Any) -> ThrottlePolicy:
        return cls(
            failures_per_account=settings.login_failures_per_account,
            failures_per_address=settings.login_failures_per_address,
            window=timedelta(seconds=settings.login_failure_window_seconds),
            block=timedelta(seconds=settings.login_block_seconds),
            max_block=timedelta(seconds=settings.login_block_max_seconds),
        )

    def limit(self, scope: Scope) -> int:
        return self.failures_per_account if scope == "account" else self.failures_per_address

    def block_for(self, failures: int, limit: int) -> timedelta | None:
        """How long a key with ``failures`` in the window is blocked (None: not blocked)."""
        if failures < limit:
            return None
        doublings: int = min(failures - limit, 32)  # 2**32 blocks is past any cap
        longer: timedelta = self.block * (1 << doublings)
        return min(longer, self.max_block)


def account_key(email: str) -> str:
    return f"account:{email}"


def address_key(client_ip: str) -> str:
    return f"address:{client_ip}"


def keys_for(email: str, client_ip: str | None) -> dict[str, Scope]:
    keys: dict[str, Scope] = {account_key(email[:300]): "account"}
    if client_ip:
        keys[address_key(client_ip[:90])] = "address"
    return keys


@functools.cache
def _insert_missing(dialect: str) -> Insert:
    statement = sqlite.insert(_table) if dialect == "sqlite" else postgresql.insert(_table)
    return statement.on_conflict_do_nothing(index_elements=["key"])


def _retry_after(blocked_until: datetime, now: datetime) -> int:
    return max(1, math.ceil((blocked_until - now).total_seconds()))


async def count_attempt(
    session: AsyncSession, policy: ThrottlePolicy, keys: dict[str, Scope], now: datetime
) -> None:
    """Count one attempt against every key, or raise 429 if one of them is blocked.

    The caller commits (the count must be committed before the password is checked).
    """
    dialect = session.get_bind().dialect.name
    await session.execute(
        _insert_missing(dialect),
        [{"key": k, "failures": 0, "last_failure_at": now, "blocked_until": None} for k in sorted(keys)],
    )
    # Locked in key order (PostgreSQL; SQLite has one writer anyway): concurrent
    # attempts on one account or address are counted one after the other.
    rows = (
        await session.execute(
            select(_table).where(_table.c.key.in_(sorted(keys))).order_by(_table.c.key).with_for_update()
        )
    ).all()
    blocked = [(keys[r.key], r.blocked_until) for r in rows if r.blocked_until and r.blocked_until > now]
    if blocked:
        scope, until = max(blocked, key=lambda b: b[1])
        retry_after = _retry_after(until, now)
        metrics.LOGIN_THROTTLED.labels("order-intake", scope).inc()
        log.info("identity.login_throttled", scope=scope, retry_after=retry_after)
        raise TooManyRequests(THROTTLED, retry_after_seconds=retry_after)
    for row in rows:
        failures = (0 if row.last_failure_at < now - policy.window else row.failures) + 1
        block = policy.block_for(failures, policy.limit(keys[row.key]))
        await session.execute(
            update(_table)
            .where(_table.c.key == row.key)
            .values(
                failures=failures,
                last_failure_at=now,
                blocked_until=now + block if block is not None else None,
            )
        )


async def take_back(
    session: AsyncSession, policy: ThrottlePolicy, keys: dict[str, Scope], now: datetime
) -> None:
    """The attempt succeeded: reset the account's counter, lower the address's by one."""
    for key, scope in keys.items():
        if scope == "account":
            await session.execute(delete(_table).where(_table.c.key == key))
            continue
        row = (await session.execute(select(_table).where(_table.c.key == key).with_for_update())).first()
        if row is None:
            continue
        failures = max(row.failures - 1, 0)
        still = policy.block_for(failures, policy.limit(scope))
        await session.execute(
            update(_table)
            .where(_table.c.key == key)
            .values(failures=failures, blocked_until=row.blocked_until if still is not None else None)
        )


async def forget_account(session: AsyncSession, email: str) -> None:
    """The account's failed-login count is over (its password was just changed or reset)."""
    await session.execute(delete(_table).where(_table.c.key == account_key(email[:300])))


async def forget_old(session: AsyncSession, policy: ThrottlePolicy, now: datetime) -> None:
    """Drop counters nobody failed on within the window and that block nothing."""
    await session.execute(
        delete(_table).where(
            and_(
                _table.c.last_failure_at < now - policy.window,
                or_(_table.c.blocked_until.is_(None), _table.c.blocked_until < now),
            )
        )
    )
