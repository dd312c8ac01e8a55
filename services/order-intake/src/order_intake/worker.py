"""The order-intake worker: order events out (relay), case events in (consumer), documents copied."""

from __future__ import annotations

import asyncio

from casebridge_shared.inbox import check_worker_topics
from casebridge_shared.worker import run_service_worker
from order_intake.bootstrap import bootstrap
from order_intake.settings import Settings, get_settings


async def work(settings: Settings, stop: asyncio.Event) -> None:
    container = bootstrap(settings)
    try:
        await check_worker_topics(
            settings, stop, relays=[container.relay()], consumers=[container.consumer()]
        )
        await asyncio.gather(
            container.relay().run(stop),
            container.consumer().run(stop),
            container.document_fetcher().run(stop),
            container.key_purger().run(stop),
        )
    finally:
        await container.close()


def main() -> None:
    run_service_worker("order-intake", get_settings(), work)
