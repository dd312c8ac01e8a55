"""RFC 9162 Merkle tree hashing, audit paths and consistency proofs.

Small and our own on purpose (see DESIGN.md: pymerkle is GPL and not RFC wire
format). Hashes are SHA-256: leaf = H(0x00 || entry), node = H(0x01 || l || r).
Indexes are 0-based, as in RFC 9162's algorithms and the transparency-dev
test vectors.

Proofs are built from a :class:`NodeSource`, which answers the root of any
*perfect, aligned* subtree; a log that stores those subtree hashes answers a
proof in O(log n) lookups. :class:`MemoryTree` is the in-memory source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not verify, or inputs no proof can be valid for."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k such that k < n <= 2k (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class NodeSource(Protocol):
    def perfect_subtree(self, level: int, index: int) -> bytes:
        """Root of the subtree of 2**level leaves starting at leaf index * 2**level."""
        ...


def subtree_root(source: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range whose left parts are aligned (as RFC 9162 recursion makes them)."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return source.perfect_subtree(level, start >> level)
    k = _largest_power_of_two_below(n)
    return node_hash(subtree_root(source, start, start + k), subtree_root(source, start + k, end))


def inclusion_proof(source: NodeSource, index: int, size: int) -> list[bytes]:
    """The audit path PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    # Iterative form of the recursion: collect siblings from the top, then reverse.
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if m < k:
            path.append(subtree_root(source, start + k, end))
            end = start + k
        else:
            path.append(subtree_root(source, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(source: NodeSource, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 9162 section 2.1.4.1."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first == second:
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(subtree_root(source, start, end))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            proof.append(subtree_root(source, start + k, end))
            end = start + k
        else:
            proof.append(subtree_root(source, start, start + k))
            start, m, complete = start + k, m - k, False
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not a SHA-256 hash")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root an audit path implies."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "proof node")
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    _check_hash(root, "root")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError("the audit path does not lead to the root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2, plus the edge cases every verifier must reject."""
    if first > second:
        raise ProofError(f"first size {first} is larger than second size {second}")
    if first == second:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if first_root != second_root:
            raise ProofError("equal sizes but different roots")
        if first == 0 and first_root != EMPTY_ROOT:
            raise ProofError("an empty tree has the empty root")
        return  # same size, same root: nothing more to prove
    _check_hash(first_root, "first root")
    _check_hash(second_root, "second root")
    if first == 0:
        raise ProofError("consistency with an empty tree proves nothing")
    if not proof:
        raise ProofError("empty consistency proof")
    for p in proof:
        _check_hash(p, "proof node")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    if fr != first_root:
        raise ProofError("the proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the proof does not lead to the second root")


class MemoryTree:
    """An append-only tree in memory that keeps every perfect subtree hash."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_leaf_hash(self, leaf: bytes) -> int:
        _check_hash(leaf, "leaf hash")
        index = self.size
        self.levels[0].append(leaf)
        level, i = 0, index
        while i & 1:  # a right child completes its parent
            if len(self.levels) == level + 1:
                self.levels.append([])
            parent = node_hash(self.levels[level][i - 1], self.levels[level][i])
            self.levels[level + 1].append(parent)
            level, i = level + 1, i >> 1
        return index

    def append(self, entry: bytes) -> int:
        return self.append_leaf_hash(leaf_hash(entry))

    def perfect_subtree(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return subtree_root(self, 0, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self, index, self.size if size is None else size)

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        return consistency_proof(self, first, self.size if second is None else second)
