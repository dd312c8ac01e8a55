"""Route: the relay's backlog and job log, for operators (A4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from casebridge_shared.auth import AdminUser
from casebridge_shared.outbox import relay_status
from casebridge_shared.problems import PROBLEM_RESPONSES
from order_intake.db import outbox
from order_intake.deps import ContainerDep

router = APIRouter(prefix="/relay", tags=["operations"], responses=PROBLEM_RESPONSES)


class RelayRunRead(BaseModel):
    id: int
    relay: str
    started_at: datetime
    finished_at: datetime
    detected: int
    published: int
    failed: int
    error: str | None


class RelayStatusRead(BaseModel):
    backlog: int
    oldest_unpublished_age_seconds: float | None
    last_runs: list[RelayRunRead]


@router.get("/status", response_model=RelayStatusRead, summary="Outbox backlog and recent relay runs (admin)")
async def read_relay_status(_admin: AdminUser, container: ContainerDep) -> Any:
    current = await relay_status(container.db, outbox)
    return RelayStatusRead(
        backlog=current.backlog,
        oldest_unpublished_age_seconds=current.oldest_unpublished_age_seconds,
        last_runs=[RelayRunRead.model_validate(r) for r in current.last_runs],
    )
