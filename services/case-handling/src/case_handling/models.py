"""Every table of case-handling, imported so the metadata is complete (migrations, tests)."""

from case_handling.db import metadata, outbox

__all__ = ["metadata", "outbox"]
