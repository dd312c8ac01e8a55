"""The one place where case-handling is wired together (cosmicpython's bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from case_handling.db import idempotent_requests, inbox, outbox, revocations
from case_handling.intake import service as intake
from case_handling.intake.events import PAYLOAD_MODELS, SOURCES
from case_handling.settings import Settings
from case_handling.threads.fetcher import CustomerFileFetcher
from casebridge_shared import revocation
from casebridge_shared.db import Database
from casebridge_shared.events import CASES_TOPIC, CATALOG_TOPIC, IDENTITY_TOPIC, ORDERS_TOPIC
from casebridge_shared.idempotency import KeyPurger
from casebridge_shared.inbox import EventConsumer
from casebridge_shared.outbox import OutboxRelay, UnitOfWork
from casebridge_shared.storage import ObjectStore, object_store

EVENT_SOURCE = "/casebridge/case-handling"
PUBLISHED_TOPICS = (CASES_TOPIC,)
CONSUMER_GROUP = "case-handling"
# What the worker's consumer reads (docs/kafka-acls.md lists each service's topics, group and ACLs).
# Identity: only disabled users and revoked sessions (casebridge_shared.revocation).
CONSUMED_TOPICS = (ORDERS_TOPIC, CATALOG_TOPIC, IDENTITY_TOPIC)


@dataclass
class Container:
    settings: Settings
    db: Database
    # The case's documents: staff uploads and the customer's files copied from order-intake.
    attachments: ObjectStore = field(init=False)

    def __post_init__(self) -> None:
        self.attachments = object_store(
            self.settings, directory=self.settings.attachment_path, namespace="case-handling/attachments"
        )

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, outbox, EVENT_SOURCE, schema_base=self.settings.event_schema_base_url)

    def key_purger(self) -> KeyPurger:
        """Forgets Idempotency-Keys after ``idempotency_key_hours`` (casebridge_shared.idempotency)."""
        return KeyPurger(self.db, [idempotent_requests], timedelta(hours=self.settings.idempotency_key_hours))

    def relay(self) -> OutboxRelay:
        return OutboxRelay(
            self.db,
            outbox,
            self.settings,
            service="case-handling",
            topics=PUBLISHED_TOPICS,
            batch_size=self.settings.relay_batch_size,
            poll_interval=self.settings.relay_poll_interval_seconds,
            retention=timedelta(hours=self.settings.outbox_retention_hours),
        )

    def consumer(self) -> EventConsumer:
        """Orders become cases; the catalog is copied for reference."""
        return EventConsumer(
            self.db,
            outbox,
            inbox,
            self.settings,
            service="case-handling",
            group=CONSUMER_GROUP,
            topics=list(CONSUMED_TOPICS),
            handlers={**intake.HANDLERS, **revocation.handlers(revocations)},
            before_run=intake.before_run,
            payload_models={**PAYLOAD_MODELS, **revocation.PAYLOAD_MODELS},
            sources={**SOURCES, **revocation.SOURCES},
            source=EVENT_SOURCE,
        )

    def customer_file_fetcher(self) -> CustomerFileFetcher:
        return CustomerFileFetcher(self.db, self.settings, self.attachments)

    async def close(self) -> None:
        await self.attachments.close()
        await self.db.dispose()


def bootstrap(settings: Settings) -> Container:
    return Container(settings=settings, db=Database(settings.database_url))
