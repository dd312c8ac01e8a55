"""Look-ups remembered for the rest of one database transaction, and some for longer.

The worker applies a run of events in one transaction; most events of a run
ask the same questions (who supervises, which team a category goes to, which
devices a person has). Remembering the answers in ``session.info`` until the
transaction ends saves a database round trip per question per event, which is
what limits the consumer on PostgreSQL.

The answers about who is told what and where (routing rules, teams, people and
their roles, preferences, devices, webhook subscriptions) change rarely, so a
consumer keeps them across runs too (``Lasting``), for as long as the
audience's version stays the same: a database trigger on each of those tables
adds one to ``audience_version`` in the transaction that changes it (an admin's
edit through the api, a new device, an identity event, an operator's SQL), and
each run reads that number first. A run that sees a new number starts afresh,
so an edit is seen by the first run that starts after its commit, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import event, select
from sqlmodel import Field
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import table_of, transaction_scoped
from notifier.db import Base

T = TypeVar("T")
_KEY = "notifier.memo"
_LASTING = "notifier.memo.lasting"
# What ``Lasting`` keeps: the kinds of look-up whose tables bump the audience's version.
LASTING_KINDS = frozenset(
    {"rule", "team", "people-with-role", "webhooks", "preference", "push-subscriptions"}
)


class AudienceVersion(Base, table=True):
    """One row: how often who is told what (routing, teams, people, preferences, devices,
    webhooks) has changed. Kept by database triggers (migration 0005), not by the code."""

    __tablename__ = "audience_version"

    id: int = Field(default=1, primary_key=True)
    version: int = 0


_VERSION_TABLE = table_of(AudienceVersion)
_READ_VERSION = select(_VERSION_TABLE.c.version).where(_VERSION_TABLE.c.id == 1)


class Lasting:
    """A consumer's answers about who is told what, kept across its runs while the version holds."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.answers: dict[Any, Any] = {}

    async def bind(self, session: AsyncSession) -> None:
        """At the start of a run: read the audience's version, and answer from here in this session."""
        version = (await session.execute(_READ_VERSION)).scalar_one_or_none()
        if version is None or version != self.version:
            self.forget()
            self.version = version
        session.info[_LASTING] = self
        sync = session.sync_session
        if not event.contains(sync, "after_soft_rollback", _rolled_back):
            event.listen(sync, "after_soft_rollback", _rolled_back)

    def forget(self) -> None:
        # A new dict: a run still holding the old one cannot put answers back into it.
        self.answers = {}
        self.version = None


def _rolled_back(session: Any, _previous: Any) -> None:
    # What a rolled-back run looked up may have seen its own changes, and its ORM
    # objects are expired by the rollback: nothing of it may outlive it.
    lasting: Lasting | None = session.info.get(_LASTING)
    if lasting is not None:
        lasting.forget()


def _store(session: AsyncSession, kind: str) -> dict[Any, Any]:
    lasting: Lasting | None = session.info.get(_LASTING)
    if lasting is not None and kind in LASTING_KINDS:
        return lasting.answers
    return transaction_scoped(session, _KEY, dict)


async def once(session: AsyncSession, key: tuple[str, Any] | str, load: Callable[[], Awaitable[T]]) -> T:
    """The answer to ``key`` (its kind: the key, or its first part), loading it the first time."""
    store = _store(session, key[0] if isinstance(key, tuple) else key)
    if key not in store:
        store[key] = await load()
    value: T = store[key]
    return value


async def per_item(
    session: AsyncSession,
    kind: str,
    items: Iterable[str],
    load: Callable[[list[str]], Awaitable[dict[str, T]]],
    default: T,
) -> dict[str, T]:
    """``{item: value}``, loading only the items not asked for before in this transaction."""
    known: dict[str, T] = _store(session, kind).setdefault(("per-item", kind), {})
    wanted = list(dict.fromkeys(items))
    missing = [i for i in wanted if i not in known]
    if missing:
        found = await load(missing)
        for item in missing:
            known[item] = found.get(item, default)
    return {i: known[i] for i in wanted}


def per_item_store(session: AsyncSession, kind: str) -> dict[str, Any]:
    """The remembered ``{item: value}`` of ``kind``, to update after a change this transaction made."""
    known: dict[str, Any] = _store(session, kind).setdefault(("per-item", kind), {})
    return known


def forget(session: AsyncSession) -> None:
    """A change this transaction made (a person's roles) invalidates what was remembered."""
    transaction_scoped(session, _KEY, dict).clear()
    lasting: Lasting | None = session.info.get(_LASTING)
    if lasting is not None:
        lasting.forget()
