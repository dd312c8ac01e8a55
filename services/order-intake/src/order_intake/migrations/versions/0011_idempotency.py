"""idempotency: the creating POSTs' Idempotency-Keys and their answers (issue 27)

Revision ID: 0011_idempotency
Revises: 0010
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

from casebridge_shared.migrations import idempotent_requests_downgrade, idempotent_requests_upgrade

revision: str = '0011_idempotency'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    idempotent_requests_upgrade()


def downgrade() -> None:
    idempotent_requests_downgrade()
