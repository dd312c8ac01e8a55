"""Checking a copy of the journal, offline: what ``customer-ledger verify`` runs. No I/O here.

Given the entries, the tree nodes and signed checkpoints the ledger stored
(from an export or from the API), the ledger's public key and the anchors the
auditor kept, it recomputes the Merkle tree from the entries alone and reports
every way the copy disagrees with itself, with what was signed or with what
the auditor kept, naming the first bad index where one can be named:

- an entry missing from the sequence (deleted), or entries missing at the end
  that a signed checkpoint or an anchor covered (truncated);
- an entry whose bytes no longer give its recorded leaf hash or its stored
  tree leaf (changed, or swapped with another);
- a stored subtree hash that the entries below it do not give (entries moved
  while their leaf rows were kept in step): the first leaf of the first such
  subtree;
- a checkpoint whose signature does not verify, whose root is not the root of
  the entries at its size, or that is out of order (a smaller tree after a
  larger one, two roots for one size, issued before the one listed before it);
- an anchor (a checkpoint the auditor kept, a witness's, an earlier export, an
  anchor saved by an earlier ``verify``) the entries do not extend, checked by
  an RFC 9162 consistency proof computed from the entries; a checkpoint the
  anchor knew that the copy no longer holds (deleted). With an earlier export
  the first entry that differs from it is named too.

The copy alone can always be rewritten consistently by whoever holds the
database (recompute the hashes, delete the checkpoints): only an anchor, which
the database cannot rewrite, tells that apart from the real history. The
report says whether one was checked (``anchored``) and how many entries no
signature covers yet (``unsigned``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from customer_ledger.journal import merkle
from customer_ledger.journal.signed_note import Checkpoint, NoteError, Verifier, open_checkpoint


@dataclass(frozen=True)
class StoredEntry:
    index: int
    body: bytes  # the canonical JSON as stored
    leaf_hash: bytes | None = None  # as recorded beside it, if the copy has it


@dataclass(frozen=True)
class IssuedCheckpoint:
    """A signed checkpoint as the copy holds it, with the time the ledger says it was issued."""

    note: str
    issued_at: datetime | None = None  # not signed: checked for order only


@dataclass(frozen=True)
class Anchor:
    """What the auditor kept, outside the ledger's database: the journal must extend it.

    ``notes``: signed checkpoints it holds (each must verify with the pinned key and
    still be among the copy's checkpoints; the journal must extend the largest).
    ``seen``: (size, root) of checkpoints the auditor saw earlier: each must still be
    there. ``size``/``root``: the whole tree the auditor saw (entries no signature
    covered yet included). ``entries``: an earlier export's entries.
    """

    source: str  # how the messages name it, e.g. "anchor kept.txt (a signed checkpoint)"
    notes: tuple[str, ...] = ()
    seen: tuple[tuple[int, bytes], ...] = ()
    size: int | None = None
    root: bytes | None = None
    entries: tuple[StoredEntry, ...] | None = None


@dataclass(frozen=True)
class Finding:
    what: str
    index: int | None  # the first bad entry index, where one can be named

    def __str__(self) -> str:
        return f"[index {self.index}] {self.what}" if self.index is not None else self.what


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class Report:
    size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    checkpoints_checked: int = 0
    # The checkpoints whose signature verified and whose root is the entries' root at
    # their size, by size: what a saved anchor keeps.
    signed: dict[int, bytes] = field(default_factory=dict)
    latest_note: str | None = None  # the signed note of the largest of those
    anchors_checked: int = 0
    checked: list[str] = field(default_factory=list)  # what was checked, for the auditor
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def anchored(self) -> bool:
        return self.anchors_checked > 0

    @property
    def last_signed(self) -> int:
        """The size of the largest checkpoint that verified and matches the entries (0: none)."""
        return max(self.signed, default=0)

    @property
    def unsigned(self) -> int:
        """Entries after the last signed checkpoint: no signature covers them yet."""
        return max(self.size - self.last_signed, 0)

    @property
    def first_bad_index(self) -> int | None:
        indexes = [f.index for f in self.findings if f.index is not None]
        return min(indexes) if indexes else None

    def add(self, what: str, index: int | None = None) -> None:
        self.findings.append(Finding(what, index))


def _contiguous(entries: Sequence[StoredEntry], report: Report) -> list[StoredEntry]:
    """The entries 0, 1, 2 ... up to the first gap (reported)."""
    ordered = sorted(entries, key=lambda e: e.index)
    kept: list[StoredEntry] = []
    for expected, entry in enumerate(ordered):
        if entry.index != expected:
            if entry.index < expected:
                report.add(f"entry {entry.index} appears twice", entry.index)
            else:
                report.add(f"entry {expected} is missing (the next present is {entry.index})", expected)
            break
        kept.append(entry)
    return kept


def verify(
    entries: Iterable[StoredEntry],
    verifier: Verifier,
    *,
    stored_nodes: Mapping[tuple[int, int], bytes] | None = None,
    checkpoints: Iterable[IssuedCheckpoint] = (),
    anchors: Sequence[Anchor] = (),
) -> Report:
    report = Report()
    present = _contiguous(list(entries), report)
    tree = merkle.MemoryTree()
    for entry in present:
        leaf = merkle.leaf_hash(entry.body)
        tree.append_leaf_hash(leaf)
        if entry.leaf_hash is not None and entry.leaf_hash != leaf:
            report.add(f"entry {entry.index} does not hash to its recorded leaf hash (changed)", entry.index)
    report.size = tree.size
    report.root = tree.root()
    span = f" (0..{tree.size - 1})" if tree.size else ""
    report.checked.append(
        f"{tree.size} entries{span} in sequence, each giving its recorded leaf hash: root {b64(report.root)}"
    )

    if stored_nodes:
        _check_nodes(tree, stored_nodes, report)
        report.checked.append(f"{len(stored_nodes)} stored tree nodes against the entries")

    held = _check_checkpoints(tree, list(checkpoints), verifier, report)
    for anchor in anchors:
        _check_anchor(tree, present, anchor, verifier, held, report)
    report.findings.sort(key=lambda f: (f.index is None, f.index or 0))
    return report


def _check_nodes(tree: merkle.MemoryTree, stored: Mapping[tuple[int, int], bytes], report: Report) -> None:
    """Every stored perfect subtree must be what the entries give; name the first entry that is not."""
    mismatched: set[tuple[int, int]] = set()
    for (level, index), digest in stored.items():
        if (index + 1) << level > tree.size:
            report.add(
                f"a tree node covers entries beyond the {tree.size} present (level {level}, {index})",
                tree.size,
            )
        elif tree.perfect_subtree(level, index) != digest:
            mismatched.add((level, index))
    if not mismatched:
        return

    def first_leaf(level: int, index: int) -> int:
        # Go down towards the disagreement: the leftmost child that disagrees too.
        while level > 0:
            left, right = (level - 1, 2 * index), (level - 1, 2 * index + 1)
            if left in mismatched:
                level, index = left
            elif right in mismatched:
                level, index = right
            else:
                break
        return index << level

    first = min(first_leaf(level, index) for level, index in mismatched)
    report.add(f"the stored tree disagrees with entry {first}: entries changed, swapped or moved", first)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check_checkpoints(
    tree: merkle.MemoryTree, issued: Sequence[IssuedCheckpoint], verifier: Verifier, report: Report
) -> dict[int, bytes]:
    """Each checkpoint's signature, origin, place in the order and root; returns the verified ones by size.

    The order is the copy's (an export lists them oldest first, as the API does): the
    sizes must not decrease, one size must have one root, and the issue times must not
    go back. A log only grows, so anything else is rows deleted and issued again, or
    a doctored copy.
    """
    held: dict[int, bytes] = {}
    previous: tuple[Checkpoint, datetime | None] | None = None
    for position, item in enumerate(issued, start=1):
        try:
            checkpoint: Checkpoint = open_checkpoint(item.note, [verifier])
        except NoteError as exc:
            report.add(f"stored checkpoint {position} does not verify: {exc}")
            continue
        report.checkpoints_checked += 1
        if checkpoint.origin != verifier.name:
            report.add(f"stored checkpoint {position} names log {checkpoint.origin!r}, not {verifier.name!r}")
            continue
        size, when = checkpoint.size, item.issued_at
        if size in held and held[size] != checkpoint.root:
            report.add(f"two checkpoints of size {size} with different roots: the log was forked")
        if previous is not None:
            before, before_when = previous
            if size < before.size:
                report.add(
                    f"checkpoints out of order: size {size} is listed after size {before.size} "
                    "(a log only grows)"
                )
            if when is not None and before_when is not None and _utc(when) < _utc(before_when):
                report.add(
                    f"checkpoints out of order: size {size} was issued at {when.isoformat()}, before "
                    f"size {before.size} ({before_when.isoformat()}), which is listed before it"
                )
        previous = (checkpoint, when)
        held.setdefault(size, checkpoint.root)
        if size > tree.size:
            report.add(
                f"a stored checkpoint covers {size} entries but only {tree.size} are here (entries from "
                f"{tree.size} on were removed)",
                tree.size,
            )
        elif tree.root(size) != checkpoint.root:
            # A checkpoint holds only a root: it cannot say which entry below its size
            # changed. The leaf and node checks, or an earlier copy, name it.
            report.add(
                f"the entries are not consistent with the stored checkpoint of size {size}: history "
                "before it was rewritten"
            )
        else:
            if size >= report.last_signed:
                report.latest_note = item.note
            report.signed[size] = checkpoint.root
    if held:
        sizes = sorted(held)
        report.checked.append(
            f"{report.checkpoints_checked} signed checkpoint(s), sizes {sizes[0]}..{sizes[-1]}: signature by "
            f"{verifier.name} (key {verifier.key_id.hex()}), sizes and issue times in order, each root the "
            "root of the entries at its size"
        )
    else:
        report.checked.append("no signed checkpoint in the copy")
    return held


def _check_anchor(
    tree: merkle.MemoryTree,
    present: Sequence[StoredEntry],
    anchor: Anchor,
    verifier: Verifier,
    held: Mapping[int, bytes],
    report: Report,
) -> None:
    report.anchors_checked += 1
    source = anchor.source
    seen: dict[int, bytes] = dict(anchor.seen)
    largest: Checkpoint | None = None
    for note in anchor.notes:
        try:
            checkpoint = open_checkpoint(note, [verifier])
        except NoteError as exc:
            report.add(f"a checkpoint in {source} does not verify with the key you pinned: {exc}")
            continue
        if checkpoint.origin != verifier.name:
            report.add(f"{source} holds a checkpoint of log {checkpoint.origin!r}, not {verifier.name!r}")
            continue
        seen[checkpoint.size] = checkpoint.root
        if largest is None or checkpoint.size > largest.size:
            largest = checkpoint
    if largest is not None:
        _extends(tree, largest.size, largest.root, f"the signed checkpoint in {source}", report)
    if anchor.size is not None and anchor.root is not None:
        _extends(tree, anchor.size, anchor.root, f"the tree recorded in {source}", report)
    if anchor.entries is not None:
        kept = merkle.MemoryTree()
        for entry in sorted(anchor.entries, key=lambda e: e.index):
            if entry.index != kept.size:
                break
            kept.append(entry.body)
        _extends(tree, kept.size, kept.root(), f"the entries of {source}", report)
        _compare_with_kept(present, anchor.entries, source, report)
    _locate(tree, seen, source, report)
    missing = sorted(size for size in seen if size not in held)
    for size in missing:
        report.add(f"the checkpoint of size {size} that {source} holds is missing from the copy (deleted)")
    for size, root in sorted(seen.items()):
        if size in held and held[size] != root:
            report.add(f"the copy's checkpoint of size {size} is not the one {source} holds: a fork")
    if seen:
        report.checked.append(
            f"{source}: the {len(seen)} checkpoint(s) it holds are still in the copy"
            + (f" except size(s) {', '.join(map(str, missing))}" if missing else "")
        )


def _locate(tree: merkle.MemoryTree, seen: Mapping[int, bytes], source: str, report: Report) -> None:
    """Where the first change lies, between the last checkpoint the anchor holds that still matches
    the entries and the first that does not (a root cannot say which entry below it changed)."""
    matched = 0
    for size in sorted(seen):
        if size > tree.size:
            return
        if tree.root(size) != seen[size]:
            report.add(
                f"the entries are not consistent with the checkpoint of size {size} that {source} holds: "
                f"the first change is among entries {matched}..{size - 1}"
            )
            return
        matched = size


def _extends(tree: merkle.MemoryTree, size: int, root: bytes, what: str, report: Report) -> None:
    """The entries extend (size, root): an RFC 9162 consistency proof from it to the whole copy."""
    if size > tree.size:
        report.add(
            f"{what} covers {size} entries but only {tree.size} are here: entries from {tree.size} on "
            "were removed",
            tree.size,
        )
        return
    if size == 0:
        if root != merkle.EMPTY_ROOT:
            report.add(f"{what} is of an empty tree with a root that is not the empty root")
        return
    proof = tree.consistency_proof(size) if size < tree.size else []
    try:
        merkle.verify_consistency(size, tree.size, root, report.root, proof)
    except merkle.ProofError:
        report.add(
            f"the entries are not consistent with {what} (size {size}): history before it was rewritten"
        )
        return
    report.checked.append(
        f"{what} (size {size}): the entries extend it, RFC 9162 consistency proof {size} -> "
        f"{tree.size} ({len(proof)} hashes) verified"
    )


def _compare_with_kept(
    present: Sequence[StoredEntry], kept: Iterable[StoredEntry], source: str, report: Report
) -> None:
    by_index = {e.index: e.body for e in present}
    for old in sorted(kept, key=lambda e: e.index):
        now = by_index.get(old.index)
        if now is None:
            report.add(f"entry {old.index} of {source} is gone", old.index)
            return
        if now != old.body:
            report.add(f"entry {old.index} differs from {source}", old.index)
            return
