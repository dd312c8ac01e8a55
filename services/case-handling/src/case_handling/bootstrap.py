"""The one place where case-handling is wired together."""

from __future__ import annotations

from dataclasses import dataclass

from case_handling.db import outbox
from case_handling.settings import Settings
from casebridge_shared.db import Database
from casebridge_shared.outbox import UnitOfWork

EVENT_SOURCE = "/casebridge/case-handling"


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
