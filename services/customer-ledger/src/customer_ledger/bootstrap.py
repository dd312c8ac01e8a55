"""The one place where customer-ledger is wired together."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from casebridge_shared import revocation
from casebridge_shared.db import Database
from casebridge_shared.events import CASES_TOPIC, IDENTITY_TOPIC, LEDGER_CHECKPOINTS_TOPIC, ORDERS_TOPIC
from casebridge_shared.group_commit import GroupCommit
from casebridge_shared.idempotency import KeyPurger
from casebridge_shared.inbox import EventConsumer
from casebridge_shared.outbox import OutboxRelay, UnitOfWork
from customer_ledger.access import service as access
from customer_ledger.access.events import PAYLOAD_MODELS as IDENTITY_PAYLOADS
from customer_ledger.access.events import SOURCES as IDENTITY_SOURCES
from customer_ledger.customers import service as customers
from customer_ledger.customers.events import PAYLOAD_MODELS as RECORD_PAYLOADS
from customer_ledger.customers.events import SOURCES as RECORD_SOURCES
from customer_ledger.db import idempotent_requests, inbox, outbox, revocations
from customer_ledger.journal.batcher import CheckpointBatcher
from customer_ledger.journal.keys import load_or_create_signer
from customer_ledger.journal.signed_note import Signer
from customer_ledger.settings import Settings

EVENT_SOURCE = "/casebridge/customer-ledger"
CONSUMER_GROUP = "customer-ledger"
# What the worker's consumer reads (docs/kafka-acls.md lists each service's topics, group and ACLs).
CONSUMED_TOPICS = (IDENTITY_TOPIC, ORDERS_TOPIC, CASES_TOPIC)
PUBLISHED_TOPICS = (LEDGER_CHECKPOINTS_TOPIC,)


@dataclass
class Container:
    settings: Settings
    db: Database
    signer: Signer
    # The api's writes: concurrent requests share a transaction (and one head lock).
    writes: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.writes = GroupCommit(
            self.uow, service="customer-ledger", max_batch=self.settings.group_commit_max_requests
        )

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, outbox, EVENT_SOURCE, schema_base=self.settings.event_schema_base_url)

    def key_purger(self) -> KeyPurger:
        """Forgets Idempotency-Keys after ``idempotency_key_hours`` (casebridge_shared.idempotency)."""
        return KeyPurger(self.db, [idempotent_requests], timedelta(hours=self.settings.idempotency_key_hours))

    def consumer(self) -> EventConsumer:
        """Identity events become login records; orders new customers and demands; cases progress."""
        return EventConsumer(
            self.db,
            outbox,
            inbox,
            self.settings,
            service="customer-ledger",
            group=CONSUMER_GROUP,
            topics=list(CONSUMED_TOPICS),
            handlers={
                **access.HANDLERS,
                **customers.order_handlers(self.settings.new_customer_department.value),
                **customers.CASE_HANDLERS,
                **revocation.handlers(revocations),
            },
            payload_models={**IDENTITY_PAYLOADS, **RECORD_PAYLOADS, **revocation.PAYLOAD_MODELS},
            sources={**IDENTITY_SOURCES, **RECORD_SOURCES, **revocation.SOURCES},
            source=EVENT_SOURCE,
        )

    def relay(self) -> OutboxRelay:
        """Publishes the checkpoints for witnesses and auditors."""
        return OutboxRelay(
            self.db,
            outbox,
            self.settings,
            service="customer-ledger",
            topics=PUBLISHED_TOPICS,
            batch_size=self.settings.relay_batch_size,
            poll_interval=self.settings.relay_poll_interval_seconds,
            retention=timedelta(hours=self.settings.outbox_retention_hours),
        )

    def checkpoint_batcher(self) -> CheckpointBatcher:
        return CheckpointBatcher(
            self.db,
            self.uow,
            self.signer,
            every_entries=self.settings.checkpoint_batch_entries,
            every_seconds=self.settings.checkpoint_batch_seconds,
            poll_seconds=self.settings.checkpoint_poll_seconds,
        )

    async def close(self) -> None:
        await self.db.dispose()


def bootstrap(settings: Settings) -> Container:
    signer = load_or_create_signer(settings.journal_key_path, settings.journal_origin)
    return Container(settings=settings, db=Database(settings.database_url), signer=signer)
