"""idempotency etags: teams, routing rules and preferences carry a version (their ETag), issue 27

Revision ID: 0011_idempotency_etags
Revises: 0010_idempotency
Create Date: 2026-12-07 18:00:00

Plain ADD COLUMN, not a batch table rebuild: SQLite's rebuild would drop the
audience triggers on these tables (0005, 0009).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011_idempotency_etags'
down_revision: str | None = '0010_idempotency'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ('teams', 'routing_rules', 'preferences'):
        op.add_column(table, sa.Column('version', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    for table in ('teams', 'routing_rules', 'preferences'):
        op.drop_column(table, 'version')
