"""Checking a copy of the journal, offline: what ``customer-ledger verify`` runs. No I/O here.

Given the entries, the tree nodes and signed checkpoints the ledger stored
(from an export or from the API) and the ledger's public key, it recomputes
the Merkle tree from the entries alone and reports every way the copy
disagrees with itself or with what was signed, naming the first bad index:

- an entry missing from the sequence (deleted), or entries missing at the end
  that a signed checkpoint covered (truncated);
- an entry whose bytes no longer give its recorded leaf hash or its stored
  tree leaf (changed, or swapped with another);
- a stored subtree hash that the entries below it do not give (entries moved
  while their leaf rows were kept in step): the first leaf of the first such
  subtree;
- a checkpoint whose signature does not verify, or whose root is not the
  root of the entries at its size;
- with a checkpoint the auditor kept earlier: the entries not consistent with
  it (history rewritten, even when every hash was recomputed and re-signed
  with the real key). With an export the auditor kept earlier, the first entry
  that differs from it is named too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from customer_ledger.journal import merkle
from customer_ledger.journal.signed_note import Checkpoint, NoteError, Verifier, open_checkpoint


@dataclass(frozen=True)
class StoredEntry:
    index: int
    body: bytes  # the canonical JSON as stored
    leaf_hash: bytes | None = None  # as recorded beside it, if the copy has it


@dataclass(frozen=True)
class Finding:
    what: str
    index: int | None  # the first bad entry index, where one can be named

    def __str__(self) -> str:
        return f"[index {self.index}] {self.what}" if self.index is not None else self.what


@dataclass
class Report:
    size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    checkpoints_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

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
    checkpoints: Iterable[str] = (),
    kept_checkpoint: str | None = None,
    kept_entries: Iterable[StoredEntry] | None = None,
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

    if stored_nodes:
        _check_nodes(tree, stored_nodes, report)

    for note in checkpoints:
        _check_checkpoint(tree, note, verifier, report, kept=False)
    if kept_checkpoint is not None:
        _check_checkpoint(tree, kept_checkpoint, verifier, report, kept=True)
    if kept_entries is not None:
        _compare_with_kept(present, list(kept_entries), report)
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


def _check_checkpoint(
    tree: merkle.MemoryTree, note: str, verifier: Verifier, report: Report, *, kept: bool
) -> None:
    label = "the checkpoint you kept" if kept else "a stored checkpoint"
    try:
        checkpoint: Checkpoint = open_checkpoint(note, [verifier])
    except NoteError as exc:
        report.add(f"{label} does not verify: {exc}")
        return
    report.checkpoints_checked += 1
    if checkpoint.origin != verifier.name:
        report.add(f"{label} names log {checkpoint.origin!r}, not {verifier.name!r}")
    if checkpoint.size > tree.size:
        report.add(
            f"{label} covers {checkpoint.size} entries but only {tree.size} are here (entries from "
            f"{tree.size} on were removed)",
            tree.size,
        )
        return
    if tree.root(checkpoint.size) != checkpoint.root:
        what = (
            f"the entries are not consistent with {label} (size {checkpoint.size}): history before it was "
            "rewritten"
        )
        # A checkpoint holds only a root: it cannot say which entry below its size
        # changed. The leaf and node checks, or an earlier copy, name it.
        report.add(what)


def _compare_with_kept(present: Sequence[StoredEntry], kept: Sequence[StoredEntry], report: Report) -> None:
    by_index = {e.index: e.body for e in present}
    for old in sorted(kept, key=lambda e: e.index):
        now = by_index.get(old.index)
        if now is None:
            report.add(f"entry {old.index} of your earlier copy is gone", old.index)
            return
        if now != old.body:
            report.add(f"entry {old.index} differs from your earlier copy", old.index)
            return
