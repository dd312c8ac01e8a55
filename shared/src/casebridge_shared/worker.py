"""Running a worker process: signals, a metrics port, and its async tasks."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog
from prometheus_client import start_http_server

from casebridge_shared.keyfiles import owner_only_umask
from casebridge_shared.logs import configure_logging

log = structlog.get_logger(__name__)


async def until_any(*events: asyncio.Event, timeout: float) -> None:
    """Until one of ``events`` is set, or ``timeout`` seconds: a worker loop's idle wait that a
    stop or a wake-up cuts short."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class WorkerSettings(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_json(self) -> bool: ...
    @property
    def worker_metrics_port(self) -> int: ...


S = TypeVar("S", bound=WorkerSettings)


GIL_SWITCH_INTERVAL_SECONDS = 0.0005


def run_worker(
    name: str,
    main: Callable[[asyncio.Event], Awaitable[None]],
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
) -> None:
    """Run ``main(stop)`` until SIGINT/SIGTERM sets ``stop``."""
    # The database drivers hand every statement to a thread (aiosqlite) or
    # back through the loop; with CPython's default 5 ms GIL switch interval
    # the event loop waits up to that long for each hand-over while another
    # thread is busy. 0.5 ms cut the order-to-case latency at 50 orders/s
    # from ~1 s to ~0.3 s p50 on SQLite (bench/bench_order_to_case.py).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)

    async def run_main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker.started", worker=name, metrics_port=metrics_port or None)
        await main(stop)
        log.info("worker.stopped", worker=name)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(run_main())


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (as ``uvicorn`` picks it for the apis), else asyncio's.

    So a worker runs on the same loop as the apis of its service. A worker hands
    every SQLite statement to aiosqlite's thread and back, and asyncio's own loop
    wakes through a self-pipe and a Python selector each time; uvloop does that
    in C (py-spy put asyncio's part at a few per cent of a worker's CPU; the
    benchmark could not tell the two loops apart beyond 2-3 points of a core at
    50 orders/s, docs/benchmarks.md 2026-11-27 13-15 UTC).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform uvloop does not support
        return None
    return uvloop.new_event_loop


def run_service_worker(
    service: str, settings: S, work: Callable[[S, asyncio.Event], Awaitable[None]]
) -> None:
    """A service's ``worker`` command: its logging, its metrics port, ``work(settings, stop)``."""
    owner_only_umask()
    configure_logging(f"{service}-worker", level=settings.log_level, json=settings.log_json)
    run_worker(
        service,
        lambda stop: work(settings, stop),
        metrics_host=settings.host,
        metrics_port=settings.worker_metrics_port,
    )
