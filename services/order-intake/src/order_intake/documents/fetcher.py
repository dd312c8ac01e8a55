"""Copies customer-visible documents from case-handling (A7, A9).

Runs in the order-intake worker. Each pending document is fetched over HTTP
with a short-lived service token that order-intake signs itself (role
``service``), streamed to a temporary file while its SHA-256 is computed, and
only if the hash and size match what the case event announced is the file
moved into place and the document made available. A mismatch is never kept:
the document is rejected, logged and counted, and an operator can re-queue it.
Connection errors and 5xx answers are retried with exponential backoff for as
long as it takes, because case-handling being down is expected to end.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import timedelta
from pathlib import Path

import httpx
import structlog

from casebridge_shared import metrics
from casebridge_shared.db import Database, utcnow
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
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        batch_size: int = 10,
    ) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.directory = settings.document_path
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
        final = service.stored_file(self.directory, document)
        partial = final.with_name(f"{final.name}.{os.getpid()}.part")
        try:
            await self._download(client, document, partial)
        except HashMismatch as exc:
            partial.unlink(missing_ok=True)
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
            partial.unlink(missing_ok=True)
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
        # Moved into place before it is marked available, so an available
        # document always has its file; a crash in between only re-fetches.
        await asyncio.to_thread(os.replace, partial, final)
        await service.mark_available(self.db, document)
        metrics.DOCUMENT_FETCHES.labels("order-intake", "stored").inc()
        log.info("documents.stored", document_id=document.id, order_id=document.order_id, size=document.size)

    async def _download(self, client: httpx.AsyncClient, document: Document, partial: Path) -> None:
        url = f"/cases/{document.case_id}/attachments/{document.id}/content"
        await asyncio.to_thread(partial.parent.mkdir, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        headers = {"Authorization": f"Bearer {self._token()}"}
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise httpx.HTTPStatusError(
                    f"case-handling answered {response.status_code}: {response.text[:200]}",
                    request=response.request,
                    response=response,
                )
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > document.size:
                        raise HashMismatch(f"more than the announced {document.size} bytes arrived")
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(out.flush)
                await asyncio.to_thread(os.fsync, out.fileno())
        if size < document.size:
            # More likely a cut connection than a wrong file: try again.
            raise OSError(f"only {size} of the announced {document.size} bytes arrived")
        if digest.hexdigest() != document.sha256:
            raise HashMismatch(f"SHA-256 {digest.hexdigest()} does not match the announced {document.sha256}")
