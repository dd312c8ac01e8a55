"""Running a worker process: signals, a metrics port, and its async tasks."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import start_http_server

log = structlog.get_logger(__name__)


def run_worker(
    name: str,
    main: Callable[[asyncio.Event], Awaitable[None]],
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
) -> None:
    """Run ``main(stop)`` until SIGINT/SIGTERM sets ``stop``."""
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker.started", worker=name, metrics_port=metrics_port or None)
        await main(stop)
        log.info("worker.stopped", worker=name)

    asyncio.run(runner())
