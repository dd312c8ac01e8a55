"""otel: the trace context of the span that made each notification and delivery, so the live
stream, web push, email and webhook deliveries continue the case event's trace

Revision ID: 0012_otel
Revises: 0011_idempotency_etags
Create Date: 2026-12-07 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0012_otel'
down_revision: str | None = '0011_idempotency_etags'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default) on both databases: no table rebuild on SQLite.
    op.add_column('deliveries', sa.Column('traceparent', sqlmodel.sql.sqltypes.AutoString(length=55), nullable=True))
    op.add_column(
        'notifications', sa.Column('traceparent', sqlmodel.sql.sqltypes.AutoString(length=55), nullable=True)
    )


def downgrade() -> None:
    # Neither table has triggers (0005 watches others), so SQLite's table rebuild loses nothing.
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('traceparent')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('traceparent')
