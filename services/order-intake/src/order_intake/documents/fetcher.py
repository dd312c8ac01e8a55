"""Copies customer-visible documents from case-handling (A7, A9).

Runs in the order-intake worker. Each pending document is fetched over HTTP
with a short-lived service token that order-intake signs itself (role
``service``), streamed into order-intake's document store (local files or S3,
casebridge_shared.storage) while its SHA-256 is computed, and only if the hash
and size match what the case event announced is the file kept there and the
document made available. A mismatch is never kept:
the document is rejected, logged and counted, and an operator can re-queue it.
Connection errors and 5xx answers are retried with exponential backoff for as
long as it takes, because case-handling being down is expected to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import structlog

from casebridge_shared import metrics
from casebridge_shared.db import Database, utcnow
from casebridge_shared.storage import ContentMismatch, ObjectStore, ObjectTooLarge, says_damaged
from casebridge_shared.worker import periodic
from order_intake.documents import service
from order_intake.documents.models import Document
from order_intake.identity.keys import KeyStore
from order_intake.settings import Settings

log = structlog.get_logger(__name__)

SERVICE_SUBJECT = "service:order-intake"
_CHUNK = 64 * 1024


class HashMismatch(Exception):
    """What arrived is not what case-handling announced."""


class DocumentFetcher:
    def __init__(
        self,
        db: Database,
        keys: KeyStore,
        settings: Settings,
        documents: ObjectStore,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        batch_size: int = 10,
    ) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.documents = documents
        self.batch_size = batch_size
        self._transport = transport
        # A fetch that has not finished by then is tried again by whoever is free.
        self._lease = timedelta(seconds=settings.document_fetch_timeout_seconds * 2 + 30)

    def _token(self) -> str:
        now = utcnow()
        return self.keys.sign(
            {
                "iss": self.settings.token_issuer,
                "aud": self.settings.token_audience,
                "sub": SERVICE_SUBJECT,
                "iat": int(now.timestamp()),
                "nbf": int(now.timestamp()),
                "exp": int((now + timedelta(minutes=self.settings.service_token_minutes)).timestamp()),
                "roles": ["service"],
                "name": "order-intake",
            }
        )

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.settings.case_handling_url.rstrip("/"),
            timeout=httpx.Timeout(self.settings.document_fetch_timeout_seconds),
            transport=self._transport,
        )

    def _backoff(self, attempts: int) -> timedelta:
        seconds = self.settings.document_fetch_backoff_seconds * 2 ** min(attempts, 20)
        return timedelta(seconds=min(seconds, self.settings.document_fetch_max_backoff_seconds))

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch what is due until ``stop``; the database away is waited out (``periodic``).

        The signing keys are loaded by the first pass (``fetch_due``), inside the loop:
        a database away when the worker starts is waited out like any other outage,
        where loading them before the loop ended the whole worker process.
        """
        async with self._client() as client:

            async def step() -> bool:
                fetched = await self.fetch_due(client)
                metrics.DOCUMENTS_PENDING.labels("order-intake").set(await service.count_pending(self.db))
                return fetched > 0  # there may be more due right away

            await periodic(
                "documents.fetch_loop", step, stop, idle_seconds=self.settings.document_fetch_poll_seconds
            )

    async def fetch_due(self, client: httpx.AsyncClient) -> int:
        """One pass over the documents due now; returns how many were attempted."""
        await self.keys.refresh_if_stale()
        due = await service.claim_due(self.db, now=utcnow(), lease=self._lease, limit=self.batch_size)
        for document in due:
            await self.fetch(client, document)
        return len(due)

    async def fetch(self, client: httpx.AsyncClient, document: Document) -> None:
        try:
            await self._download(client, document)
        except HashMismatch as exc:
            await service.mark_rejected(self.db, document, str(exc))
            metrics.DOCUMENT_FETCHES.labels("order-intake", "rejected").inc()
            log.error(
                "documents.hash_mismatch",
                document_id=document.id,
                order_id=document.order_id,
                case_id=document.case_id,
                error=str(exc),
            )
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            retry_at = utcnow() + self._backoff(document.attempts)
            await service.mark_retry(self.db, document, error, retry_at=retry_at)
            metrics.DOCUMENT_FETCHES.labels("order-intake", "retry").inc()
            log.warning(
                "documents.fetch_failed",
                document_id=document.id,
                attempt=document.attempts + 1,
                retry_at=retry_at.isoformat(),
                error=error[:300],
            )
            return
        # Stored before it is marked available, so an available document always has
        # its file; a crash in between only re-fetches.
        await service.mark_available(self.db, document)
        metrics.DOCUMENT_FETCHES.labels("order-intake", "stored").inc()
        log.info("documents.stored", document_id=document.id, order_id=document.order_id, size=document.size)

    async def _download(self, client: httpx.AsyncClient, document: Document) -> None:
        """Into the store under the document's key; kept only if size and hash match."""
        url = f"/cases/{document.case_id}/attachments/{document.id}/content"
        headers = {"Authorization": f"Bearer {self._token()}"}
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                if says_damaged(response.status_code, response.content):
                    raise HashMismatch("case-handling's stored copy is damaged (SHA-256 mismatch)")
                raise httpx.HTTPStatusError(
                    f"case-handling answered {response.status_code}: {response.text[:200]}",
                    request=response.request,
                    response=response,
                )
            try:
                await self.documents.put(
                    service.storage_key(document),
                    _whole(response, document.size),
                    max_bytes=document.size,
                    expect_sha256=document.sha256,
                )
            except ObjectTooLarge as exc:
                raise HashMismatch(f"more than the announced {document.size} bytes arrived") from exc
            except ContentMismatch as exc:
                raise HashMismatch(str(exc)) from exc


async def _whole(response: httpx.Response, announced: int) -> AsyncIterator[bytes]:
    """The body's chunks. Cut short: more likely a cut connection than a wrong file, so
    raising at its end keeps nothing and the document is tried again."""
    size = 0
    async for chunk in response.aiter_bytes(_CHUNK):
        size += len(chunk)
        yield chunk
    if size < announced:
        raise OSError(f"only {size} of the announced {announced} bytes arrived")
