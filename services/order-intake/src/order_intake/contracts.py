"""The events order-intake publishes, for ``casebridge contracts`` (entry point ``casebridge.events``).

Importing this module registers every order-intake event payload. The
generator reads ``PUBLISHER`` (the service that sends them) and
``EVENT_MODULES`` (where the payload classes are defined, in the order they
are documented). A new events module must be added here, or its events are
missing from the generated JSON Schemas and AsyncAPI document.
"""

from __future__ import annotations

from types import ModuleType

from order_intake.catalog import events as catalog_events
from order_intake.identity import events as identity_events
from order_intake.orders import events as orders_events
from order_intake.threads import events as thread_events

PUBLISHER = "order-intake"

EVENT_MODULES: tuple[ModuleType, ...] = (catalog_events, orders_events, thread_events, identity_events)
