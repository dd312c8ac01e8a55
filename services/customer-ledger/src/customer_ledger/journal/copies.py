"""Copies of the journal for auditors: an export file, or what the API serves.

Export (``customer-ledger export``, run by an operator against the database):
JSON Lines, first a header, then every entry (its canonical JSON exactly as
hashed and the leaf hash recorded beside it), every stored tree node and every
signed checkpoint, oldest first, with the time it was issued. The verifier
trusts none of it: it recomputes everything from the entries and checks it
against signatures made with the key the auditor pinned and against the
anchors the auditor kept (``anchors.py``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import select
from sqlmodel import col

from casebridge_shared.db import Database
from customer_ledger.journal.audit import IssuedCheckpoint, StoredEntry
from customer_ledger.journal.models import JournalCheckpoint, JournalEntry, JournalNode

FORMAT = "casebridge-ledger-export/1"
_PAGE = 5000


@dataclass
class JournalCopy:
    entries: list[StoredEntry] = field(default_factory=list)
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    checkpoints: list[IssuedCheckpoint] = field(default_factory=list)
    origin: str | None = None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _line(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")


async def export(db: Database, out: IO[str], origin: str) -> int:
    """Write the whole journal to ``out``; returns how many entries."""
    _line(out, {"format": FORMAT, "origin": origin, "exported_at": datetime.now(UTC).isoformat()})
    count = 0
    async with db.session() as session:
        start = 0
        while True:
            rows = (
                (
                    await session.execute(
                        select(JournalEntry)
                        .where(col(JournalEntry.index) >= start)
                        .order_by(col(JournalEntry.index))
                        .limit(_PAGE)
                    )
                )
                .scalars()
                .all()
            )
            for e in rows:
                _line(
                    out,
                    {
                        "entry": {
                            "index": e.index,
                            "kind": e.kind,
                            "body": e.body,
                            "leaf_hash": _b64(e.leaf_hash),
                        }
                    },
                )
            count += len(rows)
            if len(rows) < _PAGE:
                break
            start = rows[-1].index + 1
        nodes = await session.stream(
            select(col(JournalNode.level), col(JournalNode.index), col(JournalNode.hash))
        )
        async for level, index, digest in nodes:
            _line(out, {"node": {"level": level, "index": index, "hash": _b64(digest)}})
        notes = (
            await session.execute(
                select(col(JournalCheckpoint.note), col(JournalCheckpoint.issued_at)).order_by(
                    col(JournalCheckpoint.tree_size)
                )
            )
        ).all()
        for note, issued_at in notes:
            _line(out, {"checkpoint": note, "issued_at": issued_at.isoformat()})
    return count


def _records(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} is not JSON: {exc}") from exc


def _issued(note: str, issued_at: str | None) -> IssuedCheckpoint:
    return IssuedCheckpoint(note, datetime.fromisoformat(issued_at) if issued_at else None)


def is_export(first_line: str) -> bool:
    """Whether a file starting with this line is an export."""
    try:
        header = json.loads(first_line)
    except json.JSONDecodeError:
        return False
    return isinstance(header, dict) and header.get("format") == FORMAT


def load(path: Path) -> JournalCopy:
    """An export file; ValueError if it is not one or a line is malformed."""
    copy = JournalCopy()
    with path.open(encoding="utf-8") as f:
        records = _records(iter(f))
        header = next(records, None)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a ledger export ({FORMAT})")
        copy.origin = header.get("origin")
        for number, record in enumerate(records, start=2):
            try:
                _add(copy, record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: record {number} is malformed: {exc!r}") from exc
    return copy


def _add(copy: JournalCopy, record: dict[str, Any]) -> None:
    if "entry" in record:
        e = record["entry"]
        copy.entries.append(
            StoredEntry(int(e["index"]), e["body"].encode(), base64.b64decode(e["leaf_hash"], validate=True))
        )
    elif "node" in record:
        n = record["node"]
        copy.nodes[(int(n["level"]), int(n["index"]))] = base64.b64decode(n["hash"], validate=True)
    elif "checkpoint" in record:
        copy.checkpoints.append(_issued(str(record["checkpoint"]), record.get("issued_at")))


def fetch(base_url: str, token: str | None, *, transport: httpx.BaseTransport | None = None) -> JournalCopy:
    """What the API serves: entries (admin token), checkpoints (public). Tree nodes are not served."""
    copy = JournalCopy()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=60, transport=transport) as api:
        after = 0
        while True:
            page = api.get("/ledger/checkpoints", params={"after_size": after, "limit": 1000})
            page.raise_for_status()
            items = page.json()
            copy.checkpoints.extend(_issued(c["note"], c.get("issued_at")) for c in items)
            if len(items) < 1000:
                break
            after = items[-1]["tree_size"]
        start = 0
        while True:
            page = api.get("/ledger/entries", params={"start": start, "limit": _PAGE})
            page.raise_for_status()
            items = page.json()
            copy.entries.extend(
                StoredEntry(e["index"], e["entry"].encode(), base64.b64decode(e["leaf_hash"])) for e in items
            )
            if len(items) < _PAGE:
                break
            start = items[-1]["index"] + 1
    return copy
