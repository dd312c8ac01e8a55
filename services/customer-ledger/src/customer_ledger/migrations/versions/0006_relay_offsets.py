"""what the broker acknowledged per partition (the relay tells a broker that forgot)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00
"""

from collections.abc import Sequence

from casebridge_shared.migrations import relay_offsets_downgrade, relay_offsets_upgrade

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    relay_offsets_upgrade()


def downgrade() -> None:
    relay_offsets_downgrade()
