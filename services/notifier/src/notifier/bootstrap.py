"""The one place where notifier is wired together."""

from __future__ import annotations

from dataclasses import dataclass

from casebridge_shared.db import Database
from casebridge_shared.outbox import UnitOfWork
from notifier.db import outbox
from notifier.settings import Settings

EVENT_SOURCE = "/casebridge/notifier"


@dataclass
class Container:
    settings: Settings
    db: Database

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, outbox, EVENT_SOURCE)

    async def close(self) -> None:
        await self.db.dispose()


def bootstrap(settings: Settings) -> Container:
    return Container(settings=settings, db=Database(settings.database_url))
