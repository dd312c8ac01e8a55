"""Anchors: what an auditor keeps outside the ledger's database, to check the next copy against.

A copy of the journal can be rewritten consistently by whoever holds the
database: recompute the hashes, delete the checkpoints that no longer match.
``customer-ledger verify`` therefore wants something the database cannot
rewrite, kept by the auditor (or a witness) and read from a file, one of:

- a signed checkpoint (C2SP signed note, as ``GET /ledger/checkpoint`` serves it;
  cosignatures by witnesses may follow the ledger's, they are left alone);
- a witness's state file (``customer-ledger witness --state``): the latest
  checkpoint the witness accepted;
- an earlier export (``customer-ledger export``): its entries and checkpoints;
- an anchor saved by an earlier ``verify --save-anchor``: the newest signed
  checkpoint, every checkpoint seen (size and root) and the size and root of all
  the entries seen, those after the last checkpoint included. This one is the
  auditor's own word for what they saw: keep it where the ledger's operators
  cannot write.

Which one a file is, is told from its content.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from customer_ledger.journal import copies
from customer_ledger.journal.audit import Anchor, Report, b64

FORMAT = "casebridge-ledger-anchor/1"


def load(path: Path) -> Anchor:
    """The anchor in ``path``; ValueError if the file is none of the kinds above."""
    text = path.read_text(encoding="utf-8")
    first_line = text.split("\n", 1)[0]
    if copies.is_export(first_line):
        copy = copies.load(path)
        return Anchor(
            f"your earlier export {path.name}",
            notes=tuple(c.note for c in copy.checkpoints),
            entries=tuple(copy.entries),
        )
    if not text.lstrip().startswith("{"):
        return Anchor(f"your kept checkpoint {path.name}", notes=(text,))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not an anchor")
    if data.get("format") == FORMAT:
        return _saved(path, data)
    if isinstance(data.get("note"), str):
        return Anchor(f"the witness's checkpoint {path.name}", notes=(data["note"],))
    raise ValueError(
        f"{path} is neither a signed checkpoint, a witness's state, an export nor a saved anchor ({FORMAT})"
    )


def _saved(path: Path, data: dict[str, Any]) -> Anchor:
    try:
        note = data.get("checkpoint")
        seen = tuple(
            (int(c["tree_size"]), base64.b64decode(c["root"], validate=True)) for c in data["checkpoints"]
        )
        size = int(data["tree_size"])
        root = base64.b64decode(data["root"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: a malformed saved anchor: {exc!r}") from exc
    if size < 0:
        raise ValueError(f"{path}: a malformed saved anchor: tree_size {size}")
    return Anchor(
        f"your saved anchor {path.name}",
        notes=(note,) if isinstance(note, str) else (),
        seen=seen,
        size=size,
        root=root,
    )


def save(path: Path, report: Report, origin: str) -> None:
    """Keep what a passed ``verify`` saw, for the next one (written whole, then moved in place)."""
    record = {
        "format": FORMAT,
        "origin": origin,
        "saved_at": datetime.now(UTC).isoformat(),
        "tree_size": report.size,
        "root": b64(report.root),
        "checkpoint": report.latest_note,
        "checkpoints": [
            {"tree_size": size, "root": b64(digest)} for size, digest in sorted(report.signed.items())
        ],
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
