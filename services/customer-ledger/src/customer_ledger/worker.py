"""The customer-ledger worker: identity events in (consumer), checkpoints issued per batch and published."""

from __future__ import annotations

import asyncio

from casebridge_shared.logs import configure_logging
from casebridge_shared.worker import run_worker
from customer_ledger.bootstrap import bootstrap
from customer_ledger.settings import Settings, get_settings


async def work(settings: Settings, stop: asyncio.Event) -> None:
    container = bootstrap(settings)
    try:
        await asyncio.gather(
            container.consumer().run(stop),
            container.checkpoint_batcher().run(stop),
            container.relay().run(stop),
        )
    finally:
        await container.close()


def main() -> None:
    settings = get_settings()
    configure_logging("customer-ledger-worker", level=settings.log_level, json=settings.log_json)
    run_worker(
        "customer-ledger",
        lambda stop: work(settings, stop),
        metrics_host=settings.host,
        metrics_port=settings.worker_metrics_port,
    )
