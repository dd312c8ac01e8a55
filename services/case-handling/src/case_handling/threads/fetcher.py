"""Copies the customer's order files from order-intake into the case (issue 26).

The mirror of order-intake's document fetcher: runs in the case-handling worker;
each pending file is fetched over HTTP with a short service token that
order-intake issues to case-handling (OAuth2 client credentials, the
``service_client_secret`` setting), streamed to a temporary file while its
SHA-256 is computed, into case-handling's attachment store (local files or S3,
casebridge_shared.storage), and only if hash and size match what the file-attached
event announced is it kept there and made an attachment of the case. A mismatch
is never kept (rejected, logged, counted). Connection errors, 5xx answers and a
refused token are retried with exponential backoff for as long as it takes:
order-intake being down is expected to end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import structlog

from case_handling.cases.models import CustomerFileFetch
from case_handling.settings import Settings
from case_handling.threads import service
from casebridge_shared import metrics
from casebridge_shared.db import Database, new_id, utcnow
from casebridge_shared.storage import ContentMismatch, ObjectStore, ObjectTooLarge, says_damaged
from casebridge_shared.worker import periodic

log = structlog.get_logger(__name__)

CLIENT_ID = "case-handling"
_CHUNK = 64 * 1024


class HashMismatch(Exception):
    """What arrived is not what order-intake announced."""


class ServiceToken:
    """A service token from order-intake, taken again a minute before it expires."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._token: str | None = None
        self._renew_at = 0.0

    async def header(self, client: httpx.AsyncClient) -> dict[str, str]:
        if self._token is None or time.monotonic() >= self._renew_at:
            secret = self.settings.service_client_secret_value
            if secret is None:
                raise PermissionError("service_client_secret is not set: order-intake gives no service token")
            response = await client.post(
                "/auth/token",
                data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": secret},
            )
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"order-intake refused a service token: {response.status_code} {response.text[:200]}",
                    request=response.request,
                    response=response,
                )
            body = response.json()
            self._token = str(body["access_token"])
            self._renew_at = time.monotonic() + max(int(body.get("expires_in", 60)) - 60, 5)
        return {"Authorization": f"Bearer {self._token}"}

    def forget(self) -> None:
        self._token = None


class CustomerFileFetcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        attachments: ObjectStore,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        batch_size: int = 10,
    ) -> None:
        self.db = db
        self.settings = settings
        self.attachments = attachments
        self.batch_size = batch_size
        self._transport = transport
        self.token = ServiceToken(settings)
        # A fetch that has not finished by then is tried again by whoever is free.
        self._lease = timedelta(seconds=settings.customer_file_fetch_timeout_seconds * 2 + 30)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.settings.order_intake_url.rstrip("/"),
            timeout=httpx.Timeout(self.settings.customer_file_fetch_timeout_seconds),
            transport=self._transport,
        )

    def _backoff(self, attempts: int) -> timedelta:
        seconds = self.settings.customer_file_fetch_backoff_seconds * 2 ** min(attempts, 20)
        return timedelta(seconds=min(seconds, self.settings.customer_file_fetch_max_backoff_seconds))

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch what is due until ``stop``; the database away is waited out (``periodic``)."""
        async with self.client() as client:

            async def step() -> bool:
                fetched = await self.fetch_due(client)
                metrics.DOCUMENTS_PENDING.labels("case-handling").set(await service.count_pending(self.db))
                return fetched > 0

            await periodic(
                "customer_files.fetch_loop",
                step,
                stop,
                idle_seconds=self.settings.customer_file_fetch_poll_seconds,
            )

    async def fetch_due(self, client: httpx.AsyncClient) -> int:
        due = await service.claim_due(self.db, now=utcnow(), lease=self._lease, limit=self.batch_size)
        for fetch in due:
            await self.fetch(client, fetch)
        return len(due)

    async def fetch(self, client: httpx.AsyncClient, fetch: CustomerFileFetch) -> None:
        key = new_id()
        try:
            await self._download(client, fetch, key)
        except HashMismatch as exc:
            await service.mark_rejected(self.db, fetch, str(exc))
            metrics.DOCUMENT_FETCHES.labels("case-handling", "rejected").inc()
            log.error(
                "customer_files.hash_mismatch", file_id=fetch.id, order_id=fetch.order_id, error=str(exc)
            )
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            retry_at = utcnow() + self._backoff(fetch.attempts)
            await service.mark_retry(self.db, fetch, error, retry_at=retry_at)
            metrics.DOCUMENT_FETCHES.labels("case-handling", "retry").inc()
            log.warning(
                "customer_files.fetch_failed",
                file_id=fetch.id,
                attempt=fetch.attempts + 1,
                retry_at=retry_at.isoformat(),
                error=error[:300],
            )
            return
        # Stored before the attachment row exists, so an attachment always has its file.
        if not await service.mark_stored(self.db, fetch, key):
            await self.attachments.delete(key)  # another worker stored it first
            return
        metrics.DOCUMENT_FETCHES.labels("case-handling", "stored").inc()
        log.info("customer_files.stored", file_id=fetch.id, case_id=fetch.case_id, size=fetch.size)

    async def _download(self, client: httpx.AsyncClient, fetch: CustomerFileFetch, key: str) -> None:
        """Into the store under ``key``; the store keeps nothing unless size and hash match."""
        url = f"/orders/{fetch.order_id}/files/{fetch.id}"
        headers = await self.token.header(client)
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                if says_damaged(response.status_code, response.content):
                    raise HashMismatch("order-intake's stored copy is damaged (SHA-256 mismatch)")
                if response.status_code == 401:
                    self.token.forget()  # expired or keys rotated: take a new one next time
                raise httpx.HTTPStatusError(
                    f"order-intake answered {response.status_code}: {response.text[:200]}",
                    request=response.request,
                    response=response,
                )
            try:
                await self.attachments.put(
                    key, _whole(response, fetch.size), max_bytes=fetch.size, expect_sha256=fetch.sha256
                )
            except ObjectTooLarge as exc:
                raise HashMismatch(f"more than the announced {fetch.size} bytes arrived") from exc
            except ContentMismatch as exc:
                raise HashMismatch(str(exc)) from exc


async def _whole(response: httpx.Response, announced: int) -> AsyncIterator[bytes]:
    """The body's chunks; a body cut short raises at its end, so nothing is kept and it is tried again."""
    size = 0
    async for chunk in response.aiter_bytes(_CHUNK):
        size += len(chunk)
        yield chunk
    if size < announced:
        raise OSError(f"only {size} of the announced {announced} bytes arrived")
