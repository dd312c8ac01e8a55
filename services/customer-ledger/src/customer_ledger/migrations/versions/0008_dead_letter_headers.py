"""dead letters keep their record's Kafka headers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 14:20:00
"""

from collections.abc import Sequence

from casebridge_shared.migrations import dead_letter_headers_downgrade, dead_letter_headers_upgrade

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    dead_letter_headers_upgrade()


def downgrade() -> None:
    dead_letter_headers_downgrade()
