"""The events customer-ledger publishes, for ``casebridge contracts`` (entry point ``casebridge.events``)."""

from __future__ import annotations

from types import ModuleType

from customer_ledger.journal import events as journal_events

PUBLISHER = "customer-ledger"

EVENT_MODULES: tuple[ModuleType, ...] = (journal_events,)
