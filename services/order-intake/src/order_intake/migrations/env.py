"""Alembic environment for order-intake (logic shared in casebridge_shared.migrations)."""

from casebridge_shared.migrations import run_env
from order_intake.models import metadata

run_env(metadata)
