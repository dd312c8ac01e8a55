"""Checkpoints per batch of appends: after ``checkpoint_batch_entries`` new entries, or once
``checkpoint_batch_seconds`` have passed since the last checkpoint with anything new.

Runs in the ledger worker. Checkpoints are also issued on demand
(``GET /ledger/checkpoint``); each is stored and published once, whoever issues it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from casebridge_shared.db import Database, utcnow
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.worker import periodic
from customer_ledger.journal import service
from customer_ledger.journal.models import JournalCheckpoint
from customer_ledger.journal.signed_note import Signer

log = structlog.get_logger(__name__)


class CheckpointBatcher:
    def __init__(
        self,
        db: Database,
        uow: Callable[[], UnitOfWork],
        signer: Signer,
        *,
        every_entries: int,
        every_seconds: float,
        poll_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.uow = uow
        self.signer = signer
        self.every_entries = every_entries
        self.every = timedelta(seconds=every_seconds)
        self.poll_seconds = poll_seconds
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """A checkpoint whenever a batch bound is reached; the database away is waited out (``periodic``)."""

        async def step() -> bool:
            await self.tick()
            return False

        await periodic("checkpoints.batch", step, stop, idle_seconds=self.poll_seconds)

    async def tick(self) -> JournalCheckpoint | None:
        """Issue a checkpoint if a batch bound is reached; returns it, or None."""
        async with self.db.session() as session:
            size = await service.tree_size(session)
            last = await service.latest_checkpoint(session)
        last_size = last.tree_size if last else 0
        if size <= last_size:
            return None
        full = size - last_size >= self.every_entries
        old = last is None or self.clock() - last.issued_at >= self.every
        if not (full or old):
            return None
        async with self.uow() as uow:
            issued = await service.checkpoint(uow, self.signer)
            log.info("checkpoints.issued", tree_size=issued.tree_size)
            return issued
