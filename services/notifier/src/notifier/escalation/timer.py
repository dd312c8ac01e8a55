"""The worker loop that fires due escalations; the clock is injectable so tests need not wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog

from casebridge_shared.db import Database, utcnow
from notifier.escalation import service

log = structlog.get_logger(__name__)


class EscalationTimer:
    def __init__(self, db: Database, *, poll_seconds: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # the database may be down: keep going when it is back
                log.warning("escalation.loop_failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)

    async def tick(self) -> int:
        return await service.fire_due(self.db, self.clock())
