"""C2SP signed-note (Ed25519) and tlog-checkpoint, so any transparency-log tool can check us.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <name> <base64(key id || signature)>``. The key id is the first 4 bytes of
SHA-256(name || "\\n" || 0x01 || public key); a verifier key is written
``<name>+<key id hex>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
EM_DASH = "\u2014"


class NoteError(ValueError):
    """A malformed note, or one no trusted key signed."""


def _key_id(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_raw).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"invalid key name {name!r}")


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        try:
            name, key_id_hex, key_b64 = vkey.strip().split("+", 2)
            raw = base64.b64decode(key_b64, validate=True)
            key_id = bytes.fromhex(key_id_hex)
        except ValueError as exc:
            raise NoteError(f"malformed verifier key: {exc}") from exc
        _check_name(name)
        if len(raw) != 33 or raw[0] != ED25519 or len(key_id) != 4:
            raise NoteError("verifier key is not an Ed25519 signed-note key")
        if _key_id(name, raw[1:]) != key_id:
            raise NoteError("verifier key id does not match its key")
        return cls(name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:]))

    def __str__(self) -> str:
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([ED25519]) + raw).decode()}"


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> Verifier:
        public = self.private_key.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Verifier(self.name, _key_id(self.name, raw), public)

    def sign(self, text: str) -> str:
        """The signed note: ``text`` (must end in a newline), a blank line, our signature."""
        if not text.endswith("\n") or "\n\n" in text:
            raise NoteError("note text must end in one newline and contain no blank line")
        signature = self.private_key.sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id + signature).decode()
        return f"{text}\n{EM_DASH} {self.name} {blob}\n"


def open_note(note: str, verifiers: list[Verifier]) -> str:
    """Return the note's text if at least one of ``verifiers`` signed it; raise otherwise."""
    if not note.endswith("\n"):
        raise NoteError("a note ends in a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("a note has a blank line before its signatures")
    text, signature_block = note[: split + 1], note[split + 2 :]
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = False
    for line in signature_block.splitlines():
        prefix = f"{EM_DASH} "
        if not line.startswith(prefix):
            raise NoteError(f"malformed signature line {line!r}")
        try:
            name, blob = line[len(prefix) :].split(" ")
            raw = base64.b64decode(blob, validate=True)
        except ValueError as exc:
            raise NoteError(f"malformed signature line {line!r}") from exc
        if len(raw) < 5:
            raise NoteError("signature too short")
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue  # someone else's signature (a witness, say): not ours to check
        try:
            verifier.public_key.verify(raw[4:], text.encode())
        except InvalidSignature as exc:
            raise NoteError(f"signature by {name} does not verify") from exc
        verified = True
    if not verified:
        raise NoteError("no signature by a trusted key")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """C2SP tlog-checkpoint: origin, tree size, root hash (and optional extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint has an origin, a size and a root hash, each on its line")
        origin, size_line, root_line, *rest = lines[:-1]
        if not origin or not size_line.isdigit() or (size_line != "0" and size_line.startswith("0")):
            raise NoteError("malformed checkpoint origin or size")
        try:
            root = base64.b64decode(root_line, validate=True)
        except ValueError as exc:
            raise NoteError("malformed checkpoint root hash") from exc
        return cls(origin, int(size_line), root, tuple(rest))


def sign_checkpoint(signer: Signer, checkpoint: Checkpoint) -> str:
    return signer.sign(checkpoint.text())


def open_checkpoint(note: str, verifiers: list[Verifier]) -> Checkpoint:
    return Checkpoint.parse(open_note(note, verifiers))
