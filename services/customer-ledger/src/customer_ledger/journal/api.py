"""Routes: the journal's checkpoint, entries and proofs (SPEC B8).

Checkpoints, the public key and proofs are public: they reveal only hashes,
and anyone must be able to check that no past record changed. Entries carry
customer data: the whole sequence (for auditors' copies) is for admins; one
entry is also served to a department or customer who may see that record in
full under the access rules. Each such read is journaled.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from casebridge_shared.auth import CurrentUser, Principal, Role, require_roles
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.params import BigIndex, BigSize
from casebridge_shared.problems import PROBLEM_RESPONSES, NotFound
from customer_ledger.deps import ContainerDep, SessionDep, WritesDep
from customer_ledger.grants.service import entry_in_sight
from customer_ledger.journal import service
from customer_ledger.journal.models import (
    CheckpointRead,
    ConsistencyProof,
    EntryRead,
    InclusionProof,
    JournalEntry,
)
from customer_ledger.records import Actor, record_read

router = APIRouter(prefix="/ledger", tags=["journal"], responses=PROBLEM_RESPONSES)

# Copies of the journal for auditors: admins, and auditors (read-only, e.g. a machine client).
AuditReader = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.AUDITOR))]
NOTE = "text/plain; charset=utf-8"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    summary="The latest checkpoint (C2SP tlog-checkpoint, signed note)",
    responses={200: {"content": {NOTE: {}}}},
)
async def get_checkpoint(container: ContainerDep) -> PlainTextResponse:
    async with container.uow() as uow:
        note = (await service.checkpoint(uow, container.signer)).note
    return PlainTextResponse(note, media_type=NOTE)


@router.get(
    "/public-key",
    response_class=PlainTextResponse,
    summary="The signed-note verifier key of the journal's checkpoints",
    responses={200: {"content": {NOTE: {}}}},
)
async def get_public_key(container: ContainerDep) -> PlainTextResponse:
    return PlainTextResponse(str(container.signer.verifier) + "\n", media_type=NOTE)


@router.get(
    "/checkpoints", response_model=list[CheckpointRead], summary="Every checkpoint issued, oldest first"
)
async def list_checkpoints(
    session: SessionDep,
    after_size: Annotated[BigIndex, Query(description="Only checkpoints of larger trees")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CheckpointRead]:
    """Public, like the checkpoint itself: auditors check each against the entries."""
    rows = await service.checkpoints(session, after_size=after_size, limit=limit)
    return [CheckpointRead(tree_size=c.tree_size, note=c.note, issued_at=c.issued_at) for c in rows]


@router.get(
    "/entries", response_model=list[EntryRead], summary="Journal entries in order (for auditors' copies)"
)
async def list_entries(
    admin: AuditReader,
    writes: WritesDep,
    start: Annotated[BigIndex, Query()] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[EntryRead]:
    """Entries hold customer data: admins and auditors only, and the read is itself journaled."""

    async def look_up_and_record(uow: UnitOfWork) -> list[EntryRead]:
        rows = await service.entries(uow.session, start=start, limit=limit)
        await record_read(
            uow.session, Actor.of(admin), "journal entries", query={"start": start, "limit": limit}
        )
        return [_entry(e) for e in rows]

    return await writes.run(look_up_and_record)


def _entry(entry: JournalEntry) -> EntryRead:
    return EntryRead(
        index=entry.index,
        kind=entry.kind,
        entry=entry.body,
        leaf_hash=_b64(entry.leaf_hash),
        appended_at=entry.appended_at,
    )


@router.get("/entries/{index}", response_model=EntryRead, summary="One journal entry and its leaf hash")
async def get_entry(index: BigIndex, reader: CurrentUser, writes: WritesDep) -> EntryRead:
    """Admin reads any entry; others the change entries of the records they may see in full."""

    async def look_up_and_record(uow: UnitOfWork) -> EntryRead:
        entry = await service.entry_at(uow.session, index)
        try:
            customer_id = await entry_in_sight(uow.session, reader, json.loads(entry.body))
        except NotFound:
            raise NotFound(f"no journal entry {index}") from None
        await record_read(
            uow.session,
            Actor.of(reader),
            "journal entry",
            customers=[customer_id] if customer_id else None,
            query={"index": index},
        )
        return _entry(entry)

    return await writes.run(look_up_and_record)


@router.get("/proofs/inclusion", response_model=InclusionProof, summary="RFC 9162 audit path of an entry")
async def get_inclusion_proof(
    session: SessionDep,
    index: Annotated[BigIndex, Query()],
    tree_size: Annotated[BigSize, Query()],
) -> InclusionProof:
    leaf, path = await service.inclusion_proof(session, index, tree_size)
    return InclusionProof(
        index=index, tree_size=tree_size, leaf_hash=_b64(leaf), hashes=[_b64(h) for h in path]
    )


@router.get(
    "/proofs/consistency",
    response_model=ConsistencyProof,
    summary="RFC 9162 consistency proof between two tree sizes",
)
async def get_consistency_proof(
    session: SessionDep,
    first: Annotated[BigIndex, Query()],
    second: Annotated[BigIndex, Query()],
) -> ConsistencyProof:
    path = await service.consistency_proof(session, first, second)
    return ConsistencyProof(first=first, second=second, hashes=[_b64(h) for h in path])
