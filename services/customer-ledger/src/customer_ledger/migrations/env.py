"""Alembic environment for customer-ledger (logic shared in casebridge_shared.migrations)."""

from casebridge_shared.migrations import run_env
from customer_ledger.models import metadata

run_env(metadata)
