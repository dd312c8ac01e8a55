"""published events move out of the outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 00:00:00
"""

from collections.abc import Sequence

from casebridge_shared.migrations import outbox_published_downgrade, outbox_published_upgrade

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_published_upgrade()


def downgrade() -> None:
    outbox_published_downgrade()
