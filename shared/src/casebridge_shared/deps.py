"""FastAPI dependencies every service shares (``Annotated`` aliases, as in full-stack-fastapi-template).

Each service's ``bootstrap.Container`` is put on ``app.state.container`` by its
lifespan; anything with a ``db`` and a ``uow()`` will do here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Protocol

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import Database
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.outbox import UnitOfWork


class ServiceContainer(Protocol):
    db: Database

    def uow(self) -> UnitOfWork: ...


async def get_service_container(request: Request) -> ServiceContainer:
    container: ServiceContainer = request.app.state.container
    return container


async def get_session(
    container: Annotated[ServiceContainer, Depends(get_service_container)],
) -> AsyncIterator[AsyncSession]:
    async with container.db.session() as session:
        yield session


async def get_uow(
    container: Annotated[ServiceContainer, Depends(get_service_container)],
) -> AsyncIterator[UnitOfWork]:
    async with container.uow() as uow:
        yield uow


async def get_writes(request: Request) -> GroupCommit:
    """The container's ``writes``: for services whose api requests share write transactions."""
    writes: GroupCommit = request.app.state.container.writes
    return writes


SessionDep = Annotated[AsyncSession, Depends(get_session)]
UowDep = Annotated[UnitOfWork, Depends(get_uow)]
WritesDep = Annotated[GroupCommit, Depends(get_writes)]
