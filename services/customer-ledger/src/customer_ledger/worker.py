"""The customer-ledger worker: identity events in (consumer), checkpoints issued per batch and published."""

from __future__ import annotations

import asyncio

from casebridge_shared.inbox import check_worker_topics
from casebridge_shared.worker import run_service_worker
from customer_ledger.bootstrap import bootstrap
from customer_ledger.settings import Settings, get_settings


async def work(settings: Settings, stop: asyncio.Event) -> None:
    container = bootstrap(settings)
    try:
        await check_worker_topics(
            settings, stop, relays=[container.relay()], consumers=[container.consumer()]
        )
        await asyncio.gather(
            container.consumer().run(stop),
            container.checkpoint_batcher().run(stop),
            container.relay().run(stop),
            container.key_purger().run(stop),
        )
    finally:
        await container.close()


def main() -> None:
    run_service_worker("customer-ledger", get_settings(), work)
