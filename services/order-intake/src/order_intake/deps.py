"""FastAPI dependencies (``Annotated`` aliases, as in full-stack-fastapi-template)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.outbox import UnitOfWork
from order_intake.bootstrap import Container


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_session(container: ContainerDep) -> AsyncIterator[AsyncSession]:
    async with container.db.session() as session:
        yield session


async def get_uow(container: ContainerDep) -> AsyncIterator[UnitOfWork]:
    async with container.uow() as uow:
        yield uow


SessionDep = Annotated[AsyncSession, Depends(get_session)]
UowDep = Annotated[UnitOfWork, Depends(get_uow)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None
