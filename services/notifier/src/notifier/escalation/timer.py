"""The worker loop that fires due escalations; the clock is injectable so tests need not wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog

from casebridge_shared.db import Database, utcnow
from casebridge_shared.worker import periodic
from notifier.escalation import service

log = structlog.get_logger(__name__)


class EscalationTimer:
    def __init__(self, db: Database, *, poll_seconds: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Fire what is due every ``poll_seconds``; the database away is waited out (``periodic``)."""

        async def step() -> bool:
            await self.tick()
            return False

        await periodic("escalation.loop", step, stop, idle_seconds=self.poll_seconds)

    async def tick(self) -> int:
        return await service.fire_due(self.db, self.clock())
