"""RevocationList: disabled users and revoked sessions refused; re-read within its refresh interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData

from casebridge_shared.auth import Principal, Role
from casebridge_shared.db import Database
from casebridge_shared.outbox import UnitOfWork, outbox_tables
from casebridge_shared.problems import Unauthorized
from casebridge_shared.revocation import AccessChanged, RevocationList, next_cutoff, record, revocations_table

metadata = MetaData()
table = revocations_table(metadata)
outbox = outbox_tables(metadata)
REVOKED_AT = datetime(2026, 12, 7, 2, 0, 0, 400_000, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/r.sqlite3")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def _keep(db: Database, change: AccessChanged) -> None:
    async with UnitOfWork(db, outbox, "/test") as uow:
        await record(uow, table, change)
        await uow.commit()


def _principal(user: str, iat: float) -> Principal:
    return Principal(subject=user, roles=frozenset({Role.STAFF}), issued_at=iat)


async def test_disabled_and_revoked_are_refused_within_the_refresh_interval(db: Database) -> None:
    now = [0.0]
    checks = RevocationList(db, table, refresh_seconds=5, clock=lambda: now[0])
    await checks.check(_principal("u1", 1.0))  # nothing kept: accepted (and the empty list read)

    await _keep(db, AccessChanged(user_id="u1", active=False, sessions_not_before=REVOKED_AT, version=2))
    await checks.check(_principal("u1", 1.0))  # still the list read before, within the interval
    now[0] += 5
    with pytest.raises(Unauthorized, match="disabled"):
        await checks.check(_principal("u1", 1.0))

    # Enabled again (newer version): tokens issued before the revocation's second stay refused,
    # the second after it (what order-intake issues after a revocation) passes.
    await _keep(db, AccessChanged(user_id="u1", active=True, sessions_not_before=REVOKED_AT, version=3))
    checks.invalidate()
    with pytest.raises(Unauthorized, match="revoked"):
        await checks.check(_principal("u1", REVOKED_AT.timestamp() // 1))
    await checks.check(_principal("u1", REVOKED_AT.timestamp() // 1 + 1))
    await checks.check(_principal("someone-else", 1.0))


async def test_an_older_change_arriving_late_changes_nothing(db: Database) -> None:
    await _keep(db, AccessChanged(user_id="u1", active=False, sessions_not_before=REVOKED_AT, version=4))
    await _keep(db, AccessChanged(user_id="u1", active=True, sessions_not_before=None, version=3))
    with pytest.raises(Unauthorized, match="disabled"):
        await RevocationList(db, table, refresh_seconds=5).check(_principal("u1", 1e10))


async def test_a_second_revocation_in_the_same_second_refuses_what_the_first_let_through(
    db: Database,
) -> None:
    # Revoked at :00.4; a token issued after it (at :00.6) says the next whole second, :01.
    # Revoked again at :00.9: the cut-off moves past :01, so that token is refused too, and a
    # token issued after the second revocation (saying the cut-off's next second) passes.
    second = datetime(2026, 12, 7, 2, 0, 0, 900_000, tzinfo=UTC)
    cutoff = next_cutoff(REVOKED_AT, second)
    assert cutoff > second and cutoff.timestamp() < REVOKED_AT.timestamp() // 1 + 2
    await _keep(db, AccessChanged(user_id="u1", active=True, sessions_not_before=cutoff, version=2))
    checks = RevocationList(db, table, refresh_seconds=5)
    between = REVOKED_AT.timestamp() // 1 + 1
    with pytest.raises(Unauthorized, match="revoked"):
        await checks.check(_principal("u1", between))
    await checks.check(_principal("u1", between + 1))

    # Nothing to move past: a first revocation, or one seconds after the previous, cuts at "now".
    assert next_cutoff(None, second) == second
    later = datetime(2026, 12, 7, 2, 0, 3, 100_000, tzinfo=UTC)
    assert next_cutoff(REVOKED_AT, later) == later
