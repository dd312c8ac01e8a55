"""FastAPI dependencies of order-intake (the shared ones plus its container)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from casebridge_shared.deps import SessionDep, UowDep, WritesDep
from order_intake.bootstrap import Container


# ``async def`` although nothing is awaited: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hop per request for an attribute read.
async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


__all__ = ["ContainerDep", "SessionDep", "UowDep", "WritesDep", "client_ip"]
