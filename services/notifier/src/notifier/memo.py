"""Look-ups remembered for the rest of one database transaction.

The worker applies a run of events in one transaction; most events of a run
ask the same questions (who supervises, which team a category goes to, which
devices a person has). Remembering the answers in ``session.info`` until the
transaction ends saves a database round trip per question per event, which is
what limits the consumer on PostgreSQL. Nothing outlives the transaction, so
an admin's change is seen by the next run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import transaction_scoped

T = TypeVar("T")
_KEY = "notifier.memo"


def _store(session: AsyncSession) -> dict[Any, Any]:
    return transaction_scoped(session, _KEY, dict)


async def once(session: AsyncSession, key: Any, load: Callable[[], Awaitable[T]]) -> T:
    store = _store(session)
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
    known: dict[str, T] = _store(session).setdefault(("per-item", kind), {})
    wanted = list(dict.fromkeys(items))
    missing = [i for i in wanted if i not in known]
    if missing:
        found = await load(missing)
        for item in missing:
            known[item] = found.get(item, default)
    return {i: known[i] for i in wanted}


def per_item_store(session: AsyncSession, kind: str) -> dict[str, Any]:
    """The remembered ``{item: value}`` of ``kind``, to update after a change this transaction made."""
    known: dict[str, Any] = _store(session).setdefault(("per-item", kind), {})
    return known


def forget(session: AsyncSession) -> None:
    """Before the transaction ends: a change it made (a person's roles) invalidates what was remembered."""
    _store(session).clear()
