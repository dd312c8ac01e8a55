"""A witness: follows the published checkpoints and alerts when the log forks.

``customer-ledger witness`` keeps the latest checkpoint it accepted in a state
file. Each new checkpoint must be signed by the pinned key and consistent with
that one: the same root for the same size, and an RFC 9162 consistency proof
(fetched from the ledger's public API) from the older to the newer. A log that
rewrote its history, even re-signed with the real key, cannot give one: that is
a fork, and the witness says so loudly and keeps the checkpoint that proves it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from prometheus_client import Counter

from casebridge_shared.events import LEDGER_CHECKPOINTS_TOPIC
from casebridge_shared.kafka import make_consumer
from casebridge_shared.settings import ServiceSettings
from customer_ledger.journal import merkle
from customer_ledger.journal.signed_note import Checkpoint, NoteError, Verifier, open_checkpoint

log = structlog.get_logger(__name__)

FORKS = Counter("casebridge_ledger_witness_alerts_total", "Checkpoints the witness refused", ["reason"])


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    alert: str | None = None


class Witness:
    def __init__(
        self,
        verifier: Verifier,
        api_url: str,
        state_file: Path,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.verifier = verifier
        self.api_url = api_url.rstrip("/")
        self.state_file = state_file
        self._transport = transport
        self.latest: Checkpoint | None = None
        self.latest_note: str | None = None
        self.alerts: list[str] = []
        if state_file.exists():
            self.latest_note = json.loads(state_file.read_text())["note"]
            self.latest = open_checkpoint(self.latest_note, [verifier])

    def _save(self, note: str, checkpoint: Checkpoint) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps({"note": note, "tree_size": checkpoint.size}))
        partial.replace(self.state_file)
        self.latest, self.latest_note = checkpoint, note

    async def _consistent(self, old: Checkpoint, new: Checkpoint) -> bool:
        if old.size == 0:
            return True
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, transport=self._transport) as api:
            response = await api.get(
                "/ledger/proofs/consistency", params={"first": old.size, "second": new.size}
            )
        if response.status_code != 200:
            return False
        proof = [base64.b64decode(h) for h in response.json()["hashes"]]
        try:
            merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
        except merkle.ProofError:
            return False
        return True

    def _alert(self, reason: str, text: str) -> Verdict:
        FORKS.labels(reason).inc()
        self.alerts.append(text)
        log.error("witness.alert", reason=reason, alert=text, kept=self.latest_note)
        return Verdict(False, text)

    async def observe(self, note: str) -> Verdict:
        try:
            checkpoint = open_checkpoint(note, [self.verifier])
        except NoteError as exc:
            return self._alert("signature", f"a checkpoint that does not verify: {exc}")
        if checkpoint.origin != self.verifier.name:
            return self._alert("origin", f"a checkpoint of another log: {checkpoint.origin!r}")
        last = self.latest
        if last is None:
            self._save(note, checkpoint)
            return Verdict(True)
        if checkpoint.size == last.size:
            if checkpoint.root != last.root:
                return self._alert("fork", f"FORK: two different roots for size {checkpoint.size}")
            return Verdict(True)
        older, newer = (last, checkpoint) if checkpoint.size > last.size else (checkpoint, last)
        if not await self._consistent(older, newer):
            return self._alert(
                "fork",
                f"FORK: the checkpoint of size {checkpoint.size} is not consistent with the one of size "
                f"{last.size} this witness kept",
            )
        if checkpoint.size > last.size:
            self._save(note, checkpoint)
        return Verdict(True)

    async def follow(self, settings: ServiceSettings, stop: asyncio.Event) -> None:
        """Read the checkpoints topic from the start (the state file makes re-reading harmless)."""
        # No consumer group: a witness reads everything from the start every time (its
        # state file makes that harmless); it notices the topic once the ledger creates it.
        # Through make_consumer: the witness connects as the services do (TLS, SASL).
        consumer = make_consumer(
            settings,
            LEDGER_CHECKPOINTS_TOPIC,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=1000,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        try:
                            note = json.loads(message.value or b"{}")["data"]["note"]
                        except (ValueError, KeyError, TypeError):
                            self._alert("malformed", f"an unreadable message at offset {message.offset}")
                            continue
                        await self.observe(note)
        finally:
            await consumer.stop()
