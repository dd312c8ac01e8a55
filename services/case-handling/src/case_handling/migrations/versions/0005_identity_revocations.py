"""identity revocations: disabled users and revoked sessions, kept from identity events

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 02:30:00
"""

from collections.abc import Sequence

from casebridge_shared.migrations import identity_revocations_downgrade, identity_revocations_upgrade

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    identity_revocations_upgrade()


def downgrade() -> None:
    identity_revocations_downgrade()
