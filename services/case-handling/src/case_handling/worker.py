"""The case-handling worker: orders in (consumer), case events out (relay)."""

from __future__ import annotations

import asyncio

from case_handling.bootstrap import bootstrap
from case_handling.settings import Settings, get_settings
from casebridge_shared.logs import configure_logging
from casebridge_shared.worker import run_worker


async def work(settings: Settings, stop: asyncio.Event) -> None:
    container = bootstrap(settings)
    try:
        await asyncio.gather(container.consumer().run(stop), container.relay().run(stop))
    finally:
        await container.close()


def main() -> None:
    settings = get_settings()
    configure_logging("case-handling-worker", level=settings.log_level, json=settings.log_json)
    run_worker(
        "case-handling",
        lambda stop: work(settings, stop),
        metrics_host=settings.host,
        metrics_port=settings.worker_metrics_port,
    )
