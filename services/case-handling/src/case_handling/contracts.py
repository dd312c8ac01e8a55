"""The events case-handling publishes, for ``casebridge contracts`` (entry point ``casebridge.events``)."""

from __future__ import annotations

from types import ModuleType

from case_handling.cases import events as case_events

PUBLISHER = "case-handling"

EVENT_MODULES: tuple[ModuleType, ...] = (case_events,)
