"""Every table of case-handling, imported so the metadata is complete (migrations, tests)."""

from case_handling.cases.models import Attachment, Case, CaseEntry, CatalogProduct
from case_handling.db import inbox, metadata, outbox

__all__ = ["Attachment", "Case", "CaseEntry", "CatalogProduct", "inbox", "metadata", "outbox"]
