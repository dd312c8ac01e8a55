"""Our RFC 9162 Merkle code against the known-answer vectors in tests/data/rfc9162 (Apache-2.0)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import pytest

from customer_ledger.journal.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parent / "data" / "rfc9162"
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]


def _b64(value: str) -> bytes:
    return base64.b64decode(value) if value else b""


def _cases(kind: str) -> list[tuple[str, dict[str, object]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert len(files) > 20, f"test vectors missing under {VECTORS / kind}"
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


@pytest.mark.parametrize(("name", "case"), _cases("inclusion"), ids=lambda v: v if isinstance(v, str) else "")
def test_inclusion_vectors(name: str, case: dict[str, object]) -> None:
    def verify() -> None:
        verify_inclusion(
            int(case["leafIdx"]),  # type: ignore[call-overload]
            int(case["treeSize"]),  # type: ignore[call-overload]
            _b64(str(case["leafHash"])),
            [_b64(p) for p in case["proof"] or []],  # type: ignore[attr-defined]
            _b64(str(case["root"])),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize(
    ("name", "case"), _cases("consistency"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_consistency_vectors(name: str, case: dict[str, object]) -> None:
    def verify() -> None:
        verify_consistency(
            int(case["size1"]),  # type: ignore[call-overload]
            int(case["size2"]),  # type: ignore[call-overload]
            _b64(str(case["root1"])),
            _b64(str(case["root2"])),
            [_b64(p) for p in case["proof"] or []],  # type: ignore[attr-defined]
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


def test_reference_tree_roots_and_proofs_match_the_vectors() -> None:
    tree = MemoryTree()
    for leaf in LEAVES:
        tree.append(leaf)
    happy = json.loads((VECTORS / "inclusion" / "1" / "happy-path.json").read_text())
    assert tree.root() == _b64(happy["root"])
    assert tree.inclusion_proof(happy["leafIdx"], happy["treeSize"]) == [_b64(p) for p in happy["proof"]]
    consistency = json.loads((VECTORS / "consistency" / "1" / "happy-path.json").read_text())
    assert tree.consistency_proof(consistency["size1"], consistency["size2"]) == [
        _b64(p) for p in consistency["proof"]
    ]
    assert MemoryTree().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


def _naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def test_every_proof_we_make_verifies_and_tampering_is_caught() -> None:
    rng = random.Random(9162)
    entries = [rng.randbytes(rng.randint(0, 40)) for _ in range(70)]
    tree = MemoryTree()
    roots = [EMPTY_ROOT]
    for entry in entries:
        tree.append(entry)
        roots.append(tree.root())
    for size in range(1, 71):
        assert roots[size] == _naive_root(entries[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            verify_inclusion(index, size, leaf_hash(entries[index]), proof, roots[size])
            if proof:
                bad = list(proof)
                bad[rng.randrange(len(bad))] = bytes(32)
                with pytest.raises(ProofError):
                    verify_inclusion(index, size, leaf_hash(entries[index]), bad, roots[size])
        for first in range(1, size + 1):
            proof = tree.consistency_proof(first, size)
            verify_consistency(first, size, roots[first], roots[size], proof)
            if first < size:
                with pytest.raises(ProofError):
                    verify_consistency(
                        first, size, roots[first], roots[size - 1] if size > 1 else bytes(32), proof
                    )
