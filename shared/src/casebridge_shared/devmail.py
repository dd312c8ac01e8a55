"""The development mail catcher's handler: every email received is kept as a file a person can open.

``make up`` runs ``python -m aiosmtpd -c casebridge_shared.devmail.MailFolder <var>/mail`` (a
development-only dependency; this module does not import it). Each message becomes
``<var>/mail/<UTC time>-<recipient>.eml`` (plain text, opens in any mail program or editor), and
one line naming the file, the recipient and the subject goes to the log: never the body, which
may hold a password-reset link.
"""

from __future__ import annotations

import re
import sys
from argparse import ArgumentParser
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]+")


class MailFolder:
    """An aiosmtpd handler (duck-typed: ``handle_DATA`` and ``from_cli``) writing one .eml per mail."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._n = 0

    @classmethod
    def from_cli(cls, parser: ArgumentParser, *args: str) -> MailFolder:
        if len(args) != 1:
            parser.error("MailFolder needs one argument: the folder to keep mails in")
        return cls(args[0])

    def save(self, raw: bytes, recipients: list[str]) -> Path:
        self._n += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        who = _UNSAFE.sub("_", recipients[0] if recipients else "nobody")[:80]
        path = self.folder / f"{stamp}-{self._n:04d}-{who}.eml"
        path.write_bytes(raw)
        return path

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        recipients = [str(r) for r in envelope.rcpt_tos]
        path = self.save(data, recipients)
        subject = message_from_bytes(data, policy=default).get("Subject", "")
        print(f"mail to {', '.join(recipients)}: {subject!r} -> {path}", file=sys.stdout, flush=True)
        return "250 Message accepted for delivery"
