"""Alembic environment for notifier (logic shared in casebridge_shared.migrations)."""

from casebridge_shared.migrations import run_env
from notifier.models import metadata

run_env(metadata)
