"""The one place where order-intake is wired together (cosmicpython's bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from casebridge_shared.db import Database, table_of
from casebridge_shared.events import CASES_TOPIC, CATALOG_TOPIC, IDENTITY_TOPIC, ORDERS_TOPIC
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.idempotency import KeyPurger
from casebridge_shared.inbox import EventConsumer
from casebridge_shared.outbox import OutboxRelay, UnitOfWork
from casebridge_shared.storage import ObjectStore, object_store
from order_intake.db import idempotent_requests, inbox, outbox
from order_intake.documents.fetcher import DocumentFetcher
from order_intake.identity.keys import KeyStore, signing_keys_box
from order_intake.orders import service as orders_service
from order_intake.orders.models import IdempotencyKey
from order_intake.progress import service as progress
from order_intake.progress.events import PAYLOAD_MODELS, SOURCES
from order_intake.settings import Settings

EVENT_SOURCE = "/casebridge/order-intake"
PUBLISHED_TOPICS = (CATALOG_TOPIC, ORDERS_TOPIC, IDENTITY_TOPIC)
CONSUMER_GROUP = "order-intake"
# What the worker's consumer reads (docs/kafka-acls.md lists each service's topics, group and ACLs).
CONSUMED_TOPICS = (CASES_TOPIC,)


@dataclass
class Container:
    settings: Settings
    db: Database
    keys: KeyStore
    # Orders placed at the same moment share a write transaction (group commit).
    writes: GroupCommit = field(init=False)
    # The customer's files on their orders, and the documents copied from case-handling.
    customer_files: ObjectStore = field(init=False)
    documents: ObjectStore = field(init=False)

    def __post_init__(self) -> None:
        self.customer_files = object_store(
            self.settings, directory=self.settings.customer_file_path, namespace="order-intake/customer-files"
        )
        self.documents = object_store(
            self.settings, directory=self.settings.document_path, namespace="order-intake/documents"
        )
        self.writes = GroupCommit(
            self.uow,
            service="order-intake",
            max_batch=self.settings.group_commit_max_requests,
            before_batch=orders_service.look_up_for_orders,
        )

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, outbox, EVENT_SOURCE, schema_base=self.settings.event_schema_base_url)

    def key_purger(self) -> KeyPurger:
        """Forgets Idempotency-Keys after ``idempotency_key_hours`` (casebridge_shared.idempotency)."""
        return KeyPurger(
            self.db,
            [idempotent_requests, table_of(IdempotencyKey)],
            timedelta(hours=self.settings.idempotency_key_hours),
        )

    def relay(self) -> OutboxRelay:
        return OutboxRelay(
            self.db,
            outbox,
            self.settings,
            service="order-intake",
            topics=PUBLISHED_TOPICS,
            batch_size=self.settings.relay_batch_size,
            poll_interval=self.settings.relay_poll_interval_seconds,
            retention=timedelta(hours=self.settings.outbox_retention_hours),
        )

    def consumer(self) -> EventConsumer:
        """Case events become the customer's status, progress, solution and documents."""
        return EventConsumer(
            self.db,
            outbox,
            inbox,
            self.settings,
            service="order-intake",
            group=CONSUMER_GROUP,
            topics=list(CONSUMED_TOPICS),
            handlers=progress.HANDLERS,
            payload_models=PAYLOAD_MODELS,
            sources=SOURCES,
            source=EVENT_SOURCE,
            before_run=progress.before_run,
        )

    def document_fetcher(self) -> DocumentFetcher:
        return DocumentFetcher(self.db, self.keys, self.settings, self.documents)

    async def close(self) -> None:
        await self.customer_files.close()
        await self.documents.close()
        await self.db.dispose()


def bootstrap(settings: Settings) -> Container:
    db = Database(settings.database_url)
    keys = KeyStore(
        db,
        signing_keys_box(settings),
        grace=timedelta(minutes=settings.signing_key_grace_minutes),
        reload_after=timedelta(seconds=settings.signing_key_reload_seconds),
    )
    return Container(settings=settings, db=db, keys=keys)
