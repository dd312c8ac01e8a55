"""The notifier worker: case and identity events in (consumer), deliveries out, escalations fired."""

from __future__ import annotations

import asyncio

from casebridge_shared.inbox import check_worker_topics
from casebridge_shared.worker import run_service_worker
from notifier.bootstrap import bootstrap
from notifier.settings import Settings, get_settings


async def work(settings: Settings, stop: asyncio.Event) -> None:
    container = bootstrap(settings)
    try:
        await check_worker_topics(settings, stop, relays=(), consumers=[container.consumer()])
        await asyncio.gather(
            container.consumer().run(stop),
            container.dispatcher().run(stop),
            container.escalation_timer().run(stop),
            container.key_purger().run(stop),
        )
    finally:
        await container.close()


def main() -> None:
    run_service_worker("notifier", get_settings(), work)
