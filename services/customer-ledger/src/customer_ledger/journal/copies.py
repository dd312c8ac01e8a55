"""Copies of the journal for auditors: an export file, or what the API serves.

Export (``customer-ledger export``, run by an operator against the database):
JSON Lines, first a header, then every entry (its canonical JSON exactly as
hashed and the leaf hash recorded beside it), every stored tree node and every
signed checkpoint. The verifier trusts none of it: it recomputes everything
from the entries and checks it against signatures made with the key the
auditor pinned.
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
from customer_ledger.journal.audit import StoredEntry
from customer_ledger.journal.models import JournalCheckpoint, JournalEntry, JournalNode

FORMAT = "casebridge-ledger-export/1"
_PAGE = 5000


@dataclass
class JournalCopy:
    entries: list[StoredEntry] = field(default_factory=list)
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
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
                select(col(JournalCheckpoint.note)).order_by(col(JournalCheckpoint.tree_size))
            )
        ).all()
        for (note,) in notes:
            _line(out, {"checkpoint": note})
    return count


def _records(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} is not JSON: {exc}") from exc


def load(path: Path) -> JournalCopy:
    copy = JournalCopy()
    with path.open(encoding="utf-8") as f:
        records = _records(iter(f))
        header = next(records, None)
        if not header or header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a ledger export ({FORMAT})")
        copy.origin = header.get("origin")
        for record in records:
            if "entry" in record:
                e = record["entry"]
                copy.entries.append(
                    StoredEntry(int(e["index"]), e["body"].encode(), base64.b64decode(e["leaf_hash"]))
                )
            elif "node" in record:
                n = record["node"]
                copy.nodes[(int(n["level"]), int(n["index"]))] = base64.b64decode(n["hash"])
            elif "checkpoint" in record:
                copy.checkpoints.append(record["checkpoint"])
    return copy


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
            copy.checkpoints.extend(c["note"] for c in items)
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
