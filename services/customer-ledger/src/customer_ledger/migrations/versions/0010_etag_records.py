"""etag records: demands, progress entries and payments carry a version (their ETag), issue 27

Revision ID: 0010_etag_records
Revises: 0009_idempotency
Create Date: 2026-12-07 18:20:00

Rows written before this revision are at version 1: so are their journal entries, which
hold no version and rebuild to the default, so the rebuilt tables match the live ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010_etag_records'
down_revision: str | None = '0009_idempotency'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('demands', 'project_progress', 'payments')


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('version', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column('version')
