"""Every table of case-handling, imported so the metadata is complete (migrations, tests)."""

from case_handling.cases.models import (
    Attachment,
    Case,
    CaseEntry,
    CaseMessage,
    CaseReceipt,
    CatalogProduct,
    CustomerFileFetch,
)
from case_handling.db import inbox, metadata, outbox

__all__ = [
    "Attachment",
    "Case",
    "CaseEntry",
    "CaseMessage",
    "CaseReceipt",
    "CatalogProduct",
    "CustomerFileFetch",
    "inbox",
    "metadata",
    "outbox",
]
