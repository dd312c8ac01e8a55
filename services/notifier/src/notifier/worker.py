"""The notifier worker: case and identity events in (consumer), deliveries out, escalations fired."""

from __future__ import annotations

import asyncio

from casebridge_shared.logs import configure_logging
from casebridge_shared.worker import run_worker
from notifier.bootstrap import bootstrap
from notifier.settings import Settings, get_settings


async def work(settings: Settings, stop: asyncio.Event) -> None:
    container = bootstrap(settings)
    try:
        await asyncio.gather(
            container.consumer().run(stop),
            container.dispatcher().run(stop),
            container.escalation_timer().run(stop),
        )
    finally:
        await container.close()


def main() -> None:
    settings = get_settings()
    configure_logging("notifier-worker", level=settings.log_level, json=settings.log_json)
    run_worker(
        "notifier",
        lambda stop: work(settings, stop),
        metrics_host=settings.host,
        metrics_port=settings.worker_metrics_port,
    )
