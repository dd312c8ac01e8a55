"""idempotency: the creating POSTs' Idempotency-Keys and their answers (issue 27)

Revision ID: 0009_idempotency
Revises: 0008
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

from casebridge_shared.migrations import idempotent_requests_downgrade, idempotent_requests_upgrade

revision: str = '0009_idempotency'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    idempotent_requests_upgrade()


def downgrade() -> None:
    idempotent_requests_downgrade()
