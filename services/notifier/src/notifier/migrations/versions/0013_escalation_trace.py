"""escalation trace: the traceparent of the span that opened the case, so an escalation sent
minutes later is on the order's trace too

Revision ID: 0013_escalation_trace
Revises: 0012_otel
Create Date: 2026-12-07 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0013_escalation_trace'
down_revision: str | None = '0012_otel'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): no table rebuild on SQLite.
    op.add_column(
        'claim_timers', sa.Column('traceparent', sqlmodel.sql.sqltypes.AutoString(length=55), nullable=True)
    )


def downgrade() -> None:
    # claim_timers has no triggers, so SQLite's table rebuild loses nothing.
    with op.batch_alter_table('claim_timers', schema=None) as batch_op:
        batch_op.drop_column('traceparent')
