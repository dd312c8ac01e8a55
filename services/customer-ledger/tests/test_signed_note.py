"""C2SP signed-note and tlog-checkpoint against a real checkpoint of the Go checksum database."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from customer_ledger.journal.merkle import MemoryTree
from customer_ledger.journal.signed_note import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    open_checkpoint,
    open_note,
    sign_checkpoint,
)

DATA = Path(__file__).resolve().parent / "data" / "signed-note"


def test_go_checksum_database_checkpoint_verifies() -> None:
    note = (DATA / "sum.golang.org.checkpoint").read_text()
    verifier = Verifier.parse((DATA / "sum.golang.org.vkey").read_text())
    assert str(verifier) == (DATA / "sum.golang.org.vkey").read_text().strip()
    checkpoint = open_checkpoint(note, [verifier])
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == 65664258
    assert len(checkpoint.root) == 32


def test_one_changed_character_or_another_key_is_rejected() -> None:
    note = (DATA / "sum.golang.org.checkpoint").read_text()
    verifier = Verifier.parse((DATA / "sum.golang.org.vkey").read_text())
    with pytest.raises(NoteError):
        open_note(note.replace("65664258", "65664259"), [verifier])
    other = Signer("sum.golang.org", Ed25519PrivateKey.generate()).verifier
    with pytest.raises(NoteError, match=r"no signature by a trusted key|does not verify"):
        open_note(note, [other])
    with pytest.raises(NoteError):
        open_note(note.replace("\n\n", "\n"), [verifier])


def test_our_checkpoints_round_trip_and_carry_foreign_signatures() -> None:
    tree = MemoryTree()
    for i in range(5):
        tree.append(f"entry {i}".encode())
    signer = Signer("ledger.casebridge.example", Ed25519PrivateKey.generate())
    note = sign_checkpoint(signer, Checkpoint("ledger.casebridge.example/journal", tree.size, tree.root()))
    parsed = open_checkpoint(note, [Verifier.parse(str(signer.verifier))])
    assert parsed.size == 5 and parsed.root == tree.root()
    witness = Signer("witness.example", Ed25519PrivateKey.generate())
    cosigned = note + witness.sign(open_note(note, [signer.verifier])).split("\n\n", 1)[1]
    assert open_checkpoint(cosigned, [signer.verifier]).size == 5
    assert open_checkpoint(cosigned, [witness.verifier]).size == 5


@pytest.mark.parametrize(
    "vkey",
    ["nope", "name+zz+AQ==", "name+00000000+" + "A" * 44, "na me+01+AQ=="],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        Verifier.parse(vkey)
