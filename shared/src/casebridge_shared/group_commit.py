"""Group commit: concurrent requests' write transactions committed together.

A request that writes hands its work to ``GroupCommit.run`` instead of opening
its own unit of work. While one transaction is being written, the requests that
arrive queue up; the next transaction runs all of them, one after another in
arrival order, and commits once. Every request is answered after that commit,
so none sees an answer for a write that could still be lost, and what the
requests of one transaction did is as if they had run one after another
(their answers are sent only once all of them are durable).

What it saves is what a transaction costs apart from its own statements: the
``BEGIN``/``COMMIT`` and its disk flush, the ledger's head lock taken and its
row written, and one bulk insert per table instead of one per request. Under
no load a request runs alone, at once: nothing waits for a batch to fill.

If one request's work raises, the transaction is rolled back and nothing of it
stays: the requests before it run again together, the failing one runs alone
(its error, if it fails again, is its answer), and those after it go on
together. If the commit itself fails, each request of the batch runs alone. So
an error is never shared, and no request is answered from a rolled-back
transaction.

Each request's work runs in that request's ``contextvars`` context (its trace
id and log fields), as its own task.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from casebridge_shared.metrics import GROUP_COMMIT_REQUESTS, GROUP_COMMIT_RETRIED_APART
from casebridge_shared.outbox import UnitOfWork

log = structlog.get_logger(__name__)

T = TypeVar("T")
Work = Callable[[UnitOfWork], Awaitable[Any]]


@dataclass
class _Request:
    work: Work
    answer: asyncio.Future[Any]
    context: contextvars.Context
    needs: Any = None


# Called at the start of a shared transaction with what its requests said they
# will look up (``run(..., needs=)``), so that it can look all of them up at once.
BeforeBatch = Callable[[UnitOfWork, list[Any]], Awaitable[None]]


class _Failed(Exception):
    """Request number ``position`` of a batch raised ``error``."""

    def __init__(self, position: int, error: BaseException) -> None:
        super().__init__(position)
        self.position = position
        self.error = error


class GroupCommit:
    """Runs write requests in shared transactions of at most ``max_batch`` requests."""

    def __init__(
        self,
        begin: Callable[[], UnitOfWork],
        *,
        service: str,
        max_batch: int = 64,
        before_batch: BeforeBatch | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._begin = begin
        self._before_batch = before_batch
        self._shared = GROUP_COMMIT_REQUESTS.labels(service=service)
        self._retried = GROUP_COMMIT_RETRIED_APART.labels(service=service)
        self._max_batch = max_batch
        self._queue: deque[_Request] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0  # committed, for tests and metrics
        self.requests = 0

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]], *, needs: Any = None) -> T:
        """Run ``work`` in a write transaction, and return its result once that has committed.

        ``needs``: what ``work`` will look up, handed with the other requests' to
        ``before_batch`` before any of them runs (one statement for a batch rather
        than one per request, while the transaction holds SQLite's write lock).
        """
        loop = asyncio.get_running_loop()
        request = _Request(work, loop.create_future(), contextvars.copy_context(), needs)
        self._queue.append(request)
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            # A fresh context: the writer outlives the request that started it.
            self._writer = loop.create_task(self._write(), context=contextvars.Context())
        # Cancelled while queued (its client went away): it is skipped. Cancelled while its
        # work runs: that work still commits with the others, as a request cut off after
        # the server began it may.
        result: T = await request.answer
        return result

    async def _write(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            try:
                await self._commit(batch)
            except BaseException as exc:
                # Cancelled (shutdown) or a bug here: nobody is left waiting forever.
                for request in (*batch, *self._queue):
                    _answer(request, error=exc)
                self._queue.clear()
                raise

    async def _commit(self, batch: list[_Request]) -> None:
        if not batch:
            return
        try:
            results = await self._transaction(batch)
        except _Failed as failed:
            if len(batch) == 1:
                _answer(batch[0], error=failed.error)
                return
            self._retried.inc()
            log.info(
                "group_commit.request_failed_retrying_apart", requests=len(batch), position=failed.position
            )
            await self._commit(batch[: failed.position])
            await self._commit(batch[failed.position : failed.position + 1])
            await self._commit(batch[failed.position + 1 :])
            return
        except Exception as exc:  # the commit itself, or beginning the transaction
            if len(batch) == 1:
                _answer(batch[0], error=exc)
                return
            self._retried.inc()
            log.warning(
                "group_commit.commit_failed_retrying_apart", requests=len(batch), error=str(exc)[:200]
            )
            for request in batch:
                await self._commit([request])
            return
        self.transactions += 1
        self.requests += len(batch)
        self._shared.observe(len(batch))
        for request, result in zip(batch, results, strict=True):
            _answer(request, result=result)

    async def _transaction(self, batch: list[_Request]) -> list[Any]:
        results: list[Any] = []
        async with self._begin() as uow:
            needs = [r.needs for r in batch if r.needs is not None and not r.answer.done()]
            if needs and self._before_batch is not None:
                # A failure here is no request's own: the batch goes again one by one.
                await self._before_batch(uow, needs)
            for position, request in enumerate(batch):
                if request.answer.done():  # its client went away before it ran
                    results.append(None)
                    continue
                task = asyncio.get_running_loop().create_task(
                    _call(request.work, uow), context=request.context
                )
                try:
                    results.append(await task)
                except Exception as exc:
                    raise _Failed(position, exc) from exc
            await uow.commit()
        return results


async def _call(work: Work, uow: UnitOfWork) -> Any:
    return await work(uow)


def _answer(request: _Request, *, result: Any = None, error: BaseException | None = None) -> None:
    if request.answer.done():
        return
    if isinstance(error, asyncio.CancelledError):
        request.answer.cancel()
    elif error is not None:
        request.answer.set_exception(error)
    else:
        request.answer.set_result(result)
