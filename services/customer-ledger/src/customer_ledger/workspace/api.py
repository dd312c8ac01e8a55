"""Routes: the department, admin and auditor workspace at ``/workspace/`` (issue 26 §3), and
``GET /me/permissions``, which tells its pages what to offer.

The pages are static files (an ``index.html``, ES modules, a stylesheet, dictionaries) under
the page policy (no inline script or style); they call this service's API with the browser
session's cookie and check the journal's proofs themselves (``verify.js``).
"""

from __future__ import annotations

from pathlib import Path as FilePath

from fastapi import APIRouter

from casebridge_shared.auth import CurrentUser
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.screens import page_router
from customer_ledger.deps import WritesDep
from customer_ledger.records import Actor, record_read
from customer_ledger.workspace import service
from customer_ledger.workspace.models import Permissions

STATIC = FilePath(__file__).parent / "static"

me = APIRouter(prefix="/me", tags=["workspace"], responses=PROBLEM_RESPONSES)
# The page folder, served by the shared helper (page policy, ETags, gzip; docs/screens.md).
pages = page_router("/workspace", STATIC, tags=["workspace"])


@me.get("/permissions", response_model=Permissions, summary="What the signed-in user may read and do here")
async def my_permissions(user: CurrentUser, writes: WritesDep) -> Permissions:
    """Derived from the user's roles, department and the grants in force (read now, like every
    request). The read of the department's grants is journaled like every read."""

    async def look_up_and_record(uow: UnitOfWork) -> Permissions:
        result = await service.permissions(uow.session, user)
        await record_read(uow.session, Actor.of(user), "permissions")
        return result

    return await writes.run(look_up_and_record)
