"""``Idempotency-Key`` on creating POSTs: the same key with the same body creates once.

Two ways to keep the key, one contract (docs/api-conventions.md):

- **Stored answers** (:func:`create_once`, :func:`create_once_with_others`): the
  service's ``idempotent_requests`` table (:func:`idempotency_table`) keeps, per
  (scope, caller, key), a fingerprint of the request and the answer it got, written
  in the transaction that creates the resource. Any creating POST uses these.
- **On the created row** (order-intake's orders and the thread messages): the row
  keeps the key and ``request_hash`` under a unique constraint of its own, because
  those writes are the hot path and one more row per request costs there.

Either way a retry answers the first result again with ``Idempotent-Replayed: true``;
the same key with another body is a 422 (the client reused a key by mistake); two
requests with the same key at the same moment meet at the unique constraint, and the
loser answers the winner's result (or a 409 to retry while the winner is unfinished).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, and_, delete, select, update
from sqlalchemy.exc import IntegrityError

from casebridge_shared.db import Database, UTCDateTime, is_transient_database_error, utcnow
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.openapi import IDEMPOTENT_REPLAYED
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict, Unprocessable
from casebridge_shared.uploads import StoredFile
from casebridge_shared.worker import until_any

log = structlog.get_logger(__name__)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
_FIELD = "header.Idempotency-Key"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        min_length=1,
        max_length=200,
        description="Retry-safe creation: the same key with the same body answers the first result again "
        "(with Idempotent-Replayed: true) instead of creating another; with another body it is a 422",
    ),
]
"""The optional ``Idempotency-Key`` request header of a creating POST."""


def request_hash(*parts: str) -> str:
    """A fingerprint of what a request asks for, kept with the row it created."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")  # ("ab", "c") and ("a", "bc") differ
    return digest.hexdigest()


def body_hash(body: BaseModel, *, exclude: frozenset[str] = frozenset()) -> str:
    """A fingerprint of a request body: its canonical JSON (key order and spacing do not count).

    ``exclude``: fields never kept, not even hashed (a password: an unsalted hash of it
    is guessable); a retry differing only there is answered as the same request.
    """
    data = body.model_dump(mode="json", exclude=set(exclude) or None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_same_request(earlier_hash: str | None, this_hash: str, what: str) -> None:
    """422 when a key is reused for a different request: never answer another's result."""
    if earlier_hash != this_hash:
        raise Unprocessable(f"this Idempotency-Key was already used with a different {what}", field=_FIELD)


def mark_replayed(response: Response, replayed: bool) -> None:
    if replayed:
        response.headers[IDEMPOTENT_REPLAYED] = "true"


# --- stored answers ----------------------------------------------------------------------

IDEMPOTENT_REQUESTS = "idempotent_requests"
# The answer's headers worth giving again: where the resource is and its version then.
_KEPT_HEADERS = ("Location", "ETag")


def idempotency_table(metadata: MetaData) -> Table:
    """The keys of a service's creating POSTs and their answers, in the service's own metadata."""
    return Table(
        IDEMPOTENT_REQUESTS,
        metadata,
        # The operation ("POST /customers"): one key may be used on two endpoints.
        Column("scope", String(200), primary_key=True),
        # Keys are the caller's own: another caller's key never replays their answer.
        Column("caller", String(200), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        # NULL until the answer is kept: its creation committed in a transaction of its own.
        Column("status_code", Integer, nullable=True),
        Column("response", JSON, nullable=True),
        Column("headers", JSON, nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
    )


@dataclass(frozen=True)
class Claim:
    """One creating request's Idempotency-Key: who sent it, to which operation, for what."""

    table: Table
    scope: str
    caller: str
    key: str | None
    fingerprint: str

    def _where(self) -> Any:
        t = self.table.c
        return and_(t.scope == self.scope, t.caller == self.caller, t.key == self.key)


@dataclass
class Answer:
    """A creating request's answer: what is sent, and what is kept for its retries."""

    status_code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False

    @classmethod
    def of(cls, status_code: int, body: BaseModel, **headers: str) -> Answer:
        """The answer of ``body`` (the route's response model), e.g. ``Answer.of(201, x, Location=...)``."""
        return cls(status_code, body.model_dump(mode="json"), dict(headers))

    def response(self) -> JSONResponse:
        response = JSONResponse(self.body, status_code=self.status_code, headers=self.headers)
        mark_replayed(response, self.replayed)
        return response


@dataclass(frozen=True)
class IdempotentRequest:
    """This request's ``Idempotency-Key`` (None: not sent) and the operation it is scoped to."""

    key: str | None
    # The method and the path as sent: the same key on another customer is another request.
    scope: str

    def claim(
        self,
        table: Table,
        caller: str,
        body: BaseModel | None = None,
        *,
        exclude: frozenset[str] = frozenset(),
    ) -> Claim:
        """``caller``'s (``principal.subject``) claim on this key for ``body`` (:func:`body_hash`)."""
        # Without a key nothing is compared: no hashing on the paths benchmarked without one (/bulk).
        fingerprint = body_hash(body, exclude=exclude) if body is not None and self.key is not None else ""
        return Claim(table, self.scope, caller, self.key, fingerprint)

    def claim_upload(
        self, table: Table, caller: str, files: Sequence[StoredFile], form: Mapping[str, str] | None = None
    ) -> Claim:
        """``caller``'s claim on this key for a multipart upload of ``files`` (already stored).

        A multipart body is not JSON: its fingerprint is each file's SHA-256, name and media
        type, in the order sent, and the other ``form`` fields (boundaries and part headers
        differ between two sends of the same upload).
        """
        parts = [part for f in files for part in (f.sha256, f.file_name, f.media_type)]
        fields = [part for name, value in sorted((form or {}).items()) for part in (name, value)]
        return Claim(table, self.scope, caller, self.key, request_hash("upload", *parts, "form", *fields))


async def _idempotent_request(request: Request, idempotency_key: IdempotencyKey = None) -> IdempotentRequest:
    return IdempotentRequest(idempotency_key, f"{request.method} {request.url.path}")


Idempotent = Annotated[IdempotentRequest, Depends(_idempotent_request)]
"""A creating POST's optional ``Idempotency-Key`` with its scope (documented in the OpenAPI)."""


async def _kept_answer(uow: UnitOfWork, claim: Claim) -> Answer | None:
    """The answer kept for this claim's key (422: a different request; 409: not yet kept)."""
    t = claim.table.c
    row = (
        await uow.session.execute(
            select(t.request_hash, t.status_code, t.response, t.headers).where(claim._where())
        )
    ).first()
    if row is None:
        return None
    check_same_request(row.request_hash, claim.fingerprint, "request")
    if row.status_code is None:
        raise Conflict(
            "a request with this Idempotency-Key is being answered by another request; retry",
            field=_FIELD,
        )
    return Answer(row.status_code, row.response, dict(row.headers or {}), replayed=True)


async def _created_in(uow: UnitOfWork, claim: Claim, create: Callable[[], Awaitable[Answer]]) -> Answer:
    """``create`` in ``uow``, with its key and answer kept in the transaction that creates."""
    if claim.key is None:
        return await create()
    kept = await _kept_answer(uow, claim)
    if kept is not None:
        return kept
    # Queued before ``create`` runs, so a service that commits inside ``create`` commits
    # the key with the resource: a concurrent retry meets it at the primary key.
    row: dict[str, Any] = {
        "scope": claim.scope,
        "caller": claim.caller,
        "key": claim.key,
        "request_hash": claim.fingerprint,
        "status_code": None,
        "response": None,
        "headers": None,
        "created_at": utcnow(),
    }
    uow.insert_at_commit(claim.table, row)
    answer = await create()
    kept_headers = {name: answer.headers[name] for name in _KEPT_HEADERS if name in answer.headers}
    answer_columns = {"status_code": answer.status_code, "response": answer.body, "headers": kept_headers}
    if uow.withdraw(claim.table, row):
        # Not committed yet: the answer goes in with the resource, in one transaction.
        uow.insert_at_commit(claim.table, {**row, **answer_columns})
    else:
        # ``create`` committed: the key is there, its answer is kept now.
        await uow.session.execute(update(claim.table).where(claim._where()).values(**answer_columns))
    return answer


async def create_once(uow: UnitOfWork, claim: Claim, create: Callable[[], Awaitable[Answer]]) -> Answer:
    """Run ``create`` (which may commit ``uow``) once per key, commit, and answer.

    A retry with the key answers the kept answer again; two at the same moment: one
    creates, the other answers its result (or 409 while it is not kept yet).
    """
    try:
        answer = await _created_in(uow, claim, create)
        await uow.commit()
    except (IntegrityError, Conflict):
        # The loser of a race on the key may meet the winner at another unique
        # constraint first (a user's email): a 409 the service raised for it, or the
        # key's own primary key. Either way the winner's answer is the one to give.
        await uow.rollback()
        if claim.key is None:
            raise
        kept = await _kept_answer(uow, claim)
        if kept is None:
            raise
        return kept
    return answer


async def create_once_with_others(
    writes: GroupCommit, claim: Claim, create: Callable[[UnitOfWork], Awaitable[Answer]]
) -> Answer:
    """``create_once`` in a transaction shared with other requests (``create`` must not commit)."""
    try:
        return await writes.run(lambda uow: _created_in(uow, claim, lambda: create(uow)))
    except (IntegrityError, Conflict):
        if claim.key is None:
            raise
        kept = await writes.run(lambda uow: _kept_answer(uow, claim))
        if kept is None:
            raise
        return kept


# --- forgetting keys -------------------------------------------------------------------------


async def purge_keys(db: Database, table: Table, *, older_than: datetime) -> int:
    """Forget the keys (and kept answers) of ``table`` created before ``older_than``."""
    async with db.write_session() as session:
        result = await session.execute(delete(table).where(table.c.created_at < older_than))
        await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


class KeyPurger:
    """The worker's loop that forgets Idempotency-Keys past ``idempotency_key_hours``.

    A key is for retrying a request whose answer was lost, within hours: kept for ever,
    the tables only grow. After the retention the same key creates again.
    """

    def __init__(
        self, db: Database, tables: list[Table], keep: timedelta, *, every: timedelta = timedelta(minutes=10)
    ) -> None:
        self.db = db
        self.tables = tables
        self.keep = keep
        self.every = every

    async def purge(self) -> int:
        older_than = utcnow() - self.keep
        return sum([await purge_keys(self.db, table, older_than=older_than) for table in self.tables])

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                purged = await self.purge()
                if purged:
                    log.info("idempotency.keys_purged", count=purged)
            except Exception as exc:
                if not is_transient_database_error(exc):
                    raise
                # The database is away: the keys wait for the next round, the worker goes on.
                log.warning("idempotency.purge_failed", error=str(exc))
            await until_any(stop, timeout=self.every.total_seconds())
