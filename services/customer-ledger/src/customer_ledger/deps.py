"""FastAPI dependencies of customer-ledger (the shared ones plus its container)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from casebridge_shared.deps import SessionDep, UowDep, WritesDep
from customer_ledger.bootstrap import Container


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
# WritesDep: every request that records something (a change, and every read: B5)
# writes to the journal; they share transactions (casebridge_shared.group_commit).

__all__ = ["ContainerDep", "SessionDep", "UowDep", "WritesDep"]
