"""Alembic environment for case-handling (logic shared in casebridge_shared.migrations)."""

from case_handling.models import metadata
from casebridge_shared.migrations import run_env

run_env(metadata)
