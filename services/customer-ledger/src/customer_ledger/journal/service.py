"""Appending to the journal, proofs and checkpoints (SPEC B8). No HTTP here.

Every entry is canonical JSON (RFC 8785) so that anyone can recompute its
leaf hash from the entry alone. Appends lock the head row, so they form one
sequence however many processes write; the perfect-subtree hashes completed
by an append are stored with it, in the same transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import rfc8785
from sqlalchemy import bindparam, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared import metrics
from casebridge_shared.db import Database, transaction_scoped, utcnow
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import NotFound, Unprocessable
from customer_ledger.journal import merkle
from customer_ledger.journal.events import CheckpointIssued
from customer_ledger.journal.models import JournalCheckpoint, JournalEntry, JournalHead, JournalNode
from customer_ledger.journal.signed_note import Checkpoint, Signer, sign_checkpoint

T = TypeVar("T")


def canonical(entry: Mapping[str, Any]) -> bytes:
    return rfc8785.dumps(dict(entry))


async def _head(session: AsyncSession, *, lock: bool) -> JournalHead:
    query = select(JournalHead).where(col(JournalHead.id) == 1)
    if lock:
        query = query.with_for_update()
    head = (await session.execute(query)).scalar_one_or_none()
    if head is None:
        head = JournalHead(id=1, size=0)
        session.add(head)
        await session.flush()
    return head


async def tree_size(session: AsyncSession) -> int:
    await _write_pending(session)
    size = (
        await session.execute(select(col(JournalHead.size)).where(col(JournalHead.id) == 1))
    ).scalar_one_or_none()
    return int(size or 0)


# The subtrees a proof needs, in one statement whose text never changes: the keys go in
# as one bound value (a JSON array on SQLite, two arrays on PostgreSQL) and are joined to
# the primary key. Building an ``OR`` of ``level = L AND index IN (...)`` terms per proof
# cost more than the query itself (SQLAlchemy constructs and caches the expression each
# time); a row-value ``(level, index) IN (...)`` is not an index look-up on SQLite.
_NODES_BY_KEY = {
    "sqlite": text(
        'SELECT n.level, n."index", n.hash FROM json_each(:keys) AS k '
        "JOIN journal_nodes AS n ON n.level = json_extract(k.value, '$[0]') "
        "AND n.\"index\" = json_extract(k.value, '$[1]')"
    ),
    "postgresql": text(
        'SELECT n.level, n."index", n.hash '
        "FROM unnest(CAST(:levels AS integer[]), CAST(:indexes AS bigint[])) AS k(level, idx) "
        'JOIN journal_nodes AS n ON n.level = k.level AND n."index" = k.idx'
    ),
}


async def _nodes(
    session: AsyncSession, keys: set[tuple[int, int]], *, committed_only: bool = False
) -> dict[tuple[int, int], bytes]:
    """The stored subtree hashes for ``keys``, in one primary-key join.

    ``committed_only``: the keys are of subtrees earlier transactions completed (an
    append's left siblings it does not hold), so this one's rows need not go first.
    """
    if not keys:
        return {}
    if not committed_only:
        await _write_pending(session)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        ordered = sorted(keys)
        params: dict[str, Any] = {
            "levels": [level for level, _ in ordered],
            "indexes": [index for _, index in ordered],
        }
    else:
        params = {"keys": json.dumps(sorted(keys))}
    rows = await session.execute(_NODES_BY_KEY[dialect], params)
    return {(level, index): bytes(digest) for level, index, digest in rows}


_TRANSACTION_STATE = "journal.transaction"


@dataclass
class _Transaction:
    """What this transaction appended: the tree's size (its head row locked), the nodes it completed,
    the rows not yet written.

    A consumer run appends one entry per event in one transaction, and so do the
    api requests of one group commit: after the first append the head row is
    already locked by us and the left siblings an append needs are the ones we
    just wrote, so neither is read again. The entry and node rows and the head's
    new size are written when the transaction commits (one bulk insert per
    table), or before anything in it reads the journal: not once per append.
    Otherwise each append's rows went out with the next request's first query
    (the session's autoflush), one statement per row and table. The rows the
    entries produce in the views are queued the same way
    (``casebridge_shared.db.queue_insert``).
    """

    size: int
    written: dict[tuple[int, int], bytes] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    size_written: int = 0

    @property
    def pending(self) -> bool:
        return bool(self.entries or self.nodes or self.size != self.size_written)


_HEAD_SIZE = update(JournalHead).where(col(JournalHead.id) == 1).values(size=bindparam("new_size"))


def _write_pending_sync(session: Any) -> None:
    """Write the rows this transaction appended or queued (sync: also runs inside the commit)."""
    state: _Transaction | None = session.info.get(_TRANSACTION_STATE)
    if state is None or not state.pending:
        return
    entries, nodes = state.entries, state.nodes
    state.entries, state.nodes = [], []
    connection = session.connection()
    if entries:
        connection.execute(insert(JournalEntry), entries)
    if nodes:
        connection.execute(insert(JournalNode), nodes)
    if state.size != state.size_written:
        connection.execute(_HEAD_SIZE, {"new_size": state.size})
        state.size_written = state.size


async def _write_pending(session: AsyncSession) -> None:
    """Before this transaction reads the journal: write what it appended so far."""
    state: _Transaction | None = session.info.get(_TRANSACTION_STATE)
    if state is not None and state.pending:
        await session.run_sync(_write_pending_sync)


async def _transaction_state(session: AsyncSession) -> _Transaction:
    state: _Transaction | None = session.info.get(_TRANSACTION_STATE)
    if state is None:
        head = await _head(session, lock=True)
        state = transaction_scoped(
            session,
            _TRANSACTION_STATE,
            lambda: _Transaction(size=head.size, size_written=head.size),
        )
        sync = session.sync_session
        if not event.contains(sync, "before_commit", _write_pending_sync):
            event.listen(sync, "before_commit", _write_pending_sync)
    return state


async def lock(session: AsyncSession) -> int:
    """Hold the head row for this transaction (no appends meanwhile); returns the tree size."""
    return (await _transaction_state(session)).size


@dataclass(frozen=True)
class Appended:
    """Where an appended entry landed (its row is written with the transaction's commit)."""

    index: int
    leaf_hash: bytes


async def append(session: AsyncSession, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Appended]:
    """Append ``(kind, entry)`` pairs in order; the caller commits (with the state they record).

    Returns each entry's index and leaf hash; the rows are written to the
    database with the transaction's commit.
    """
    if not entries:
        return []
    state = await _transaction_state(session)
    written = state.written
    size = state.size
    new_nodes: dict[tuple[int, int], bytes] = {}
    appended: list[Appended] = []
    now = utcnow()
    for kind, body in entries:
        data = canonical(body)
        leaf = merkle.leaf_hash(data)
        index = size
        text = data.decode()
        appended.append(Appended(index, leaf))
        state.entries.append(
            {"index": index, "kind": kind, "body": text, "leaf_hash": leaf, "appended_at": now}
        )
        new_nodes[(0, index)] = leaf
        # Completing leaf ``index`` completes one perfect subtree per trailing 1 bit.
        level, position, digest = 0, index, leaf
        while position % 2 == 1:
            left_key = (level, position - 1)
            left = new_nodes.get(left_key) or written.get(left_key)
            if left is None:
                left = (await _nodes(session, {left_key}, committed_only=True))[left_key]
            level, position = level + 1, position // 2
            digest = merkle.node_hash(left, digest)
            new_nodes[(level, position)] = digest
        size += 1
    state.nodes.extend({"level": lv, "index": ix, "hash": h} for (lv, ix), h in new_nodes.items())
    written.update(new_nodes)
    state.size = size
    return appended


class _Recorder:
    """Answers any subtree with a placeholder and notes which were asked for.

    The proof algorithms ask for the same subtrees whatever their hashes are,
    so one dry run tells which rows one query must fetch.
    """

    def __init__(self) -> None:
        self.keys: set[tuple[int, int]] = set()

    def perfect_subtree(self, level: int, index: int) -> bytes:
        self.keys.add((level, index))
        return bytes(merkle.HASH_SIZE)


class _Nodes:
    def __init__(self, nodes: dict[tuple[int, int], bytes]) -> None:
        self.nodes = nodes

    def perfect_subtree(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


class _Beyond(Exception):
    """A subtree the computation needs is not stored: the tree size asked for is not reached yet."""


async def _with_nodes(session: AsyncSession, compute: Callable[[merkle.NodeSource], T]) -> T:
    recorder = _Recorder()
    compute(recorder)
    found = await _nodes(session, recorder.keys)
    if len(found) != len(recorder.keys):
        raise _Beyond
    return compute(_Nodes(found))


async def _proof(
    session: AsyncSession, size: int, field: str, compute: Callable[[merkle.NodeSource], T]
) -> T:
    """``compute`` over the stored subtrees, in one query: no separate look-up of the tree size.

    A proof for a tree of ``size`` leaves reads subtrees that together cover all of
    them, and a subtree is stored once its last leaf is appended; so a size beyond
    the journal shows as a missing subtree, and only then is the size read (for the
    error message, or to tell a damaged journal from a premature size).
    """
    try:
        return await _with_nodes(session, compute)
    except _Beyond:
        current = await tree_size(session)
        if size > current:
            raise Unprocessable(
                f"the journal has {current} entries; {field}={size} is beyond it", field=field
            ) from None
        raise RuntimeError(f"journal nodes below tree size {current} are missing") from None


async def root(session: AsyncSession, size: int) -> bytes:
    return await _with_nodes(session, lambda source: merkle.subtree_root(source, 0, size))


async def _require_size(session: AsyncSession, size: int, field: str) -> None:
    current = await tree_size(session)
    if not 0 <= size <= current:
        raise Unprocessable(f"the journal has {current} entries; {field}={size} is beyond it", field=field)


async def inclusion_proof(session: AsyncSession, index: int, size: int) -> tuple[bytes, list[bytes]]:
    if not 0 <= index < size:
        raise Unprocessable(f"index {index} is not in a tree of {size} entries", field="query.index")

    # The leaf hash is stored as the level-0 node: fetched with the path, in the same query.
    def compute(source: merkle.NodeSource) -> tuple[bytes, list[bytes]]:
        return source.perfect_subtree(0, index), merkle.inclusion_proof(source, index, size)

    return await _proof(session, size, "query.tree_size", compute)


async def consistency_proof(session: AsyncSession, first: int, second: int) -> list[bytes]:
    if not 0 < first <= second:
        # RFC 9162 defines no proof from the empty tree: everything is consistent with it.
        raise Unprocessable(f"first ({first}) must be between 1 and second ({second})", field="query.first")
    if first == second:
        # The empty proof reads no subtree, so the size is checked on its own.
        await _require_size(session, second, "query.second")
        return []
    return await _proof(
        session, second, "query.second", lambda source: merkle.consistency_proof(source, first, second)
    )


async def entry_at(session: AsyncSession, index: int) -> JournalEntry:
    await _write_pending(session)
    entry = await session.get(JournalEntry, index)
    if entry is None:
        raise NotFound(f"no journal entry {index}")
    return entry


async def latest_checkpoint(session: AsyncSession) -> JournalCheckpoint | None:
    rows = await session.execute(
        select(JournalCheckpoint).order_by(col(JournalCheckpoint.tree_size).desc()).limit(1)
    )
    return rows.scalars().first()


async def refresh_checkpoint_gauges(db: Database) -> None:
    """The checkpoint age and the entries after it, for ``/metrics`` (read at each scrape): an
    auditor can only hold the ledger to what a signed checkpoint covers."""
    async with db.session() as session:
        size = await tree_size(session)
        last = await latest_checkpoint(session)
    covered = last.tree_size if last is not None else 0
    age = (utcnow() - last.issued_at).total_seconds() if last is not None else 0.0
    metrics.LEDGER_CHECKPOINT_AGE_SECONDS.labels("customer-ledger").set(max(0.0, age))
    metrics.LEDGER_ENTRIES_UNCHECKPOINTED.labels("customer-ledger").set(max(0, size - covered))


async def checkpoint(uow: UnitOfWork, signer: Signer) -> JournalCheckpoint:
    """The signed checkpoint of the current tree, issued now (and published) if the tree grew.

    Commits. Each new checkpoint goes out on ``casebridge.ledger-checkpoints.v1``
    through the outbox, in the same transaction that stores it.
    """
    session = uow.session
    size = await tree_size(session)
    existing = await session.get(JournalCheckpoint, size)
    if existing is not None:
        return existing
    digest = await root(session, size)
    note = sign_checkpoint(signer, Checkpoint(signer.name, size, digest))
    issued = JournalCheckpoint(tree_size=size, root_hash=digest, note=note, issued_at=utcnow())
    session.add(issued)
    uow.emit(
        CheckpointIssued(
            origin=signer.name,
            tree_size=size,
            root_hash=base64.b64encode(digest).decode(),
            note=note,
            issued_at=issued.issued_at,
        ),
        key=signer.name,
        version=size,
    )
    try:
        await uow.commit()
    except IntegrityError:
        # Another request issued this size's checkpoint at the same moment: use theirs.
        await session.rollback()
        theirs = await session.get(JournalCheckpoint, size)
        if theirs is None:
            raise
        return theirs
    return issued


async def checkpoints(session: AsyncSession, *, after_size: int, limit: int) -> list[JournalCheckpoint]:
    rows = await session.execute(
        select(JournalCheckpoint)
        .where(col(JournalCheckpoint.tree_size) > after_size)
        .order_by(col(JournalCheckpoint.tree_size))
        .limit(limit)
    )
    return list(rows.scalars().all())


async def entries(session: AsyncSession, *, start: int, limit: int) -> list[JournalEntry]:
    await _write_pending(session)
    rows = await session.execute(
        select(JournalEntry)
        .where(col(JournalEntry.index) >= start)
        .order_by(col(JournalEntry.index))
        .limit(limit)
    )
    return list(rows.scalars().all())
