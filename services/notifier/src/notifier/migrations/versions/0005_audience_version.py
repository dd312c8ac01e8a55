"""audience version: a number the database adds one to whenever who is told what changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 11:00:00

The worker keeps its look-ups of routing rules, teams, people, preferences,
devices and webhook subscriptions across runs while this number stays the same
(``notifier.memo.Lasting``). Triggers, not the code, keep it: an edit by any
path (the api, an identity event, the dispatcher removing a dead device, an
operator's SQL) counts, in the transaction that makes it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> the columns whose update counts (None: any update). A webhook's failure
# counter changes with every failed delivery and decides nothing about who is told.
WATCHED: dict[str, tuple[str, ...] | None] = {
    'teams': None,
    'team_members': None,
    'routing_rules': None,
    'people': None,
    'preferences': None,
    'push_subscriptions': None,
    'webhook_subscriptions': ('active', 'event_types'),
}
BUMP = 'UPDATE audience_version SET version = version + 1 WHERE id = 1'


def upgrade() -> None:
    op.create_table(
        'audience_version',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.execute('INSERT INTO audience_version (id, version) VALUES (1, 0)')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            'CREATE FUNCTION audience_changed() RETURNS trigger LANGUAGE plpgsql AS $$ '
            f'BEGIN {BUMP}; RETURN NULL; END $$'
        )
        for table, columns in WATCHED.items():
            update = f'UPDATE OF {", ".join(columns)}' if columns else 'UPDATE'
            op.execute(
                f'CREATE TRIGGER {table}_audience_changed AFTER INSERT OR DELETE OR {update} ON {table} '
                'FOR EACH STATEMENT EXECUTE FUNCTION audience_changed()'
            )
        return
    for table, columns in WATCHED.items():
        update = f'UPDATE OF {", ".join(columns)}' if columns else 'UPDATE'
        for what, when in (('inserted', 'INSERT'), ('updated', update), ('deleted', 'DELETE')):
            op.execute(f'CREATE TRIGGER {table}_audience_{what} AFTER {when} ON {table} BEGIN {BUMP}; END')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in WATCHED:
            op.execute(f'DROP TRIGGER {table}_audience_changed ON {table}')
        op.execute('DROP FUNCTION audience_changed()')
    else:
        for table in WATCHED:
            for what in ('inserted', 'updated', 'deleted'):
                op.execute(f'DROP TRIGGER {table}_audience_{what}')
    op.drop_table('audience_version')
