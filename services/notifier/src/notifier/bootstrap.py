"""The one place where notifier is wired together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from py_vapid import Vapid02

from casebridge_shared import revocation
from casebridge_shared.db import Database
from casebridge_shared.events import CASES_TOPIC, IDENTITY_TOPIC, ORDERS_TOPIC
from casebridge_shared.idempotency import KeyPurger
from casebridge_shared.inbox import EventConsumer
from casebridge_shared.outbox import UnitOfWork
from notifier import memo
from notifier.db import idempotent_requests, inbox, outbox
from notifier.deliveries import sealing
from notifier.deliveries import service as deliveries
from notifier.deliveries.dispatcher import Dispatcher
from notifier.deliveries.events import PAYLOAD_MODELS as ORDER_PAYLOADS
from notifier.deliveries.events import SOURCES as ORDER_SOURCES
from notifier.deliveries.sealing import SecretBox
from notifier.deliveries.vapid import load_or_create
from notifier.directory import service as directory
from notifier.directory.events import PAYLOAD_MODELS as IDENTITY_PAYLOADS
from notifier.directory.events import SOURCES as IDENTITY_SOURCES
from notifier.escalation.timer import EscalationTimer
from notifier.notifications import rules
from notifier.notifications.events import PAYLOAD_MODELS as CASE_PAYLOADS
from notifier.notifications.events import SOURCES as CASE_SOURCES
from notifier.settings import Settings

EVENT_SOURCE = "/casebridge/notifier"
CONSUMER_GROUP = "notifier"
# What the worker's consumer reads (docs/kafka-acls.md lists each service's topics, group and ACLs).
# Orders only for the webhooks that subscribe to order events (docs/notifier.md).
CONSUMED_TOPICS = (CASES_TOPIC, IDENTITY_TOPIC, ORDERS_TOPIC)
# Nothing: the notifier publishes no events.
PUBLISHED_TOPICS: tuple[str, ...] = ()


@dataclass
class Container:
    settings: Settings
    db: Database
    vapid: Vapid02
    webhook_secrets: SecretBox

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, outbox, EVENT_SOURCE, schema_base=self.settings.event_schema_base_url)

    def key_purger(self) -> KeyPurger:
        """Forgets Idempotency-Keys after ``idempotency_key_hours`` (casebridge_shared.idempotency)."""
        return KeyPurger(self.db, [idempotent_requests], timedelta(hours=self.settings.idempotency_key_hours))

    def consumer(self) -> EventConsumer:
        """Case events become notifications and deliveries; identity events keep the directory of people;
        order events go to the webhooks that ask for them."""
        return EventConsumer(
            self.db,
            outbox,
            inbox,
            self.settings,
            service="notifier",
            group=CONSUMER_GROUP,
            topics=list(CONSUMED_TOPICS),
            handlers={**rules.handlers(self.settings), **directory.HANDLERS, **deliveries.ORDER_HANDLERS},
            payload_models={
                **CASE_PAYLOADS,
                **IDENTITY_PAYLOADS,
                **revocation.PAYLOAD_MODELS,
                **ORDER_PAYLOADS,
            },
            sources={**CASE_SOURCES, **IDENTITY_SOURCES, **revocation.SOURCES, **ORDER_SOURCES},
            source=EVENT_SOURCE,
            before_run=rules.before_run(memo.Lasting()),
        )

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.db, self.settings, self.vapid, self.webhook_secrets)

    def escalation_timer(self) -> EscalationTimer:
        return EscalationTimer(self.db, poll_seconds=self.settings.escalation_poll_seconds)

    async def close(self) -> None:
        await self.db.dispose()


def bootstrap(settings: Settings) -> Container:
    return Container(
        settings=settings,
        db=Database(settings.database_url),
        vapid=load_or_create(settings.vapid_key_path),
        webhook_secrets=sealing.load_or_create(settings.webhook_secrets_key_path),
    )
