"""Every table of customer-ledger, imported so the metadata is complete (migrations, tests)."""

from customer_ledger.access.models import ChangeRecord, LoginRecord, ReadRecord
from customer_ledger.customers.models import Association, Customer, Demand, Payment, ProgressEntry
from customer_ledger.db import inbox, metadata, outbox
from customer_ledger.grants.models import Grant
from customer_ledger.journal.models import JournalCheckpoint, JournalEntry, JournalHead, JournalNode

__all__ = [
    "Association",
    "ChangeRecord",
    "Customer",
    "Demand",
    "Grant",
    "JournalCheckpoint",
    "JournalEntry",
    "JournalHead",
    "JournalNode",
    "LoginRecord",
    "Payment",
    "ProgressEntry",
    "ReadRecord",
    "inbox",
    "metadata",
    "outbox",
]
