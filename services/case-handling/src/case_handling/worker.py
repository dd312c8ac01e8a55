"""The case-handling worker: orders in (consumer), case events out (relay), customer files copied."""

from __future__ import annotations

import asyncio

from case_handling.bootstrap import bootstrap
from case_handling.settings import Settings, get_settings
from casebridge_shared.inbox import check_worker_topics
from casebridge_shared.worker import run_service_worker


async def work(settings: Settings, stop: asyncio.Event) -> None:
    container = bootstrap(settings)
    try:
        await check_worker_topics(
            settings, stop, relays=[container.relay()], consumers=[container.consumer()]
        )
        await asyncio.gather(
            container.consumer().run(stop),
            container.relay().run(stop),
            # The customer's order files, copied from order-intake (issue 26).
            container.customer_file_fetcher().run(stop),
            container.key_purger().run(stop),
        )
    finally:
        await container.close()


def main() -> None:
    run_service_worker("case-handling", get_settings(), work)
