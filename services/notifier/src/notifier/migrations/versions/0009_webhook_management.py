"""webhook management: a version (ETag) per webhook, the previous secret during a rotation's
overlap, and the audit of manual redeliveries

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 14:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import casebridge_shared.db

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# 0005's audience triggers on webhook_subscriptions (SQLite), as 0005 writes them.
_BUMP = 'UPDATE audience_version SET version = version + 1 WHERE id = 1'
_AUDIENCE_TRIGGERS = (('inserted', 'INSERT'), ('updated', 'UPDATE OF active, event_types'), ('deleted', 'DELETE'))


def _keep_audience_triggers() -> None:
    """SQLite's batch mode may copy the table into a new one, and a table's triggers go with the
    old one: without them the worker's lasting look-ups would never learn of a webhook change
    (notifier.memo), and 0005's downgrade would find nothing to drop. PostgreSQL alters in place."""
    if op.get_bind().dialect.name != 'sqlite':
        return
    for what, when in _AUDIENCE_TRIGGERS:
        op.execute(
            f'CREATE TRIGGER IF NOT EXISTS webhook_subscriptions_audience_{what} AFTER {when} '
            f'ON webhook_subscriptions BEGIN {_BUMP}; END'
        )


def upgrade() -> None:
    with op.batch_alter_table('webhook_subscriptions', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('previous_secret', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=True)
        )
        batch_op.add_column(
            sa.Column('previous_secret_expires_at', casebridge_shared.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
    _keep_audience_triggers()
    op.create_table(
        'delivery_redeliveries',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('delivery_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('requested_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('previous_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('previous_error', sa.Text(), nullable=True),
        sa.Column('at', casebridge_shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('delivery_redeliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_redeliveries_delivery_id'), ['delivery_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('delivery_redeliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_redeliveries_delivery_id'))
    op.drop_table('delivery_redeliveries')
    with op.batch_alter_table('webhook_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('version')
        batch_op.drop_column('previous_secret_expires_at')
        batch_op.drop_column('previous_secret')
    _keep_audience_triggers()
