"""Every table of customer-ledger, imported so the metadata is complete (migrations, tests)."""

from customer_ledger.access.models import LoginRecord
from customer_ledger.db import inbox, metadata, outbox
from customer_ledger.journal.models import JournalCheckpoint, JournalEntry, JournalHead, JournalNode

__all__ = [
    "JournalCheckpoint",
    "JournalEntry",
    "JournalHead",
    "JournalNode",
    "LoginRecord",
    "inbox",
    "metadata",
    "outbox",
]
