"""Every table of customer-ledger, imported so the metadata is complete (migrations, tests)."""

from customer_ledger.db import metadata, outbox

__all__ = ["metadata", "outbox"]
