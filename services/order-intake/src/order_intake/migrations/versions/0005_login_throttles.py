"""login throttles: failed-login counters per account and client address

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import casebridge_shared.db

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'login_throttles',
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('last_failure_at', casebridge_shared.db.UTCDateTime(), nullable=False),
        sa.Column('blocked_until', casebridge_shared.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_index('ix_login_throttles_last_failure_at', 'login_throttles', ['last_failure_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_login_throttles_last_failure_at', table_name='login_throttles')
    op.drop_table('login_throttles')
