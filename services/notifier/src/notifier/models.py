"""Every table of notifier, imported so the metadata is complete (migrations, tests)."""

from notifier.db import metadata, outbox

__all__ = ["metadata", "outbox"]
