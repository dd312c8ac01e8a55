"""merge the two issue-26 heads: password resets (0007) and order threads (0007_threads)

Both branches started from 0006 at the same time; this empty revision joins them so
``upgrade head`` has one head again. If one of them is re-chained after the other before
they land on main, delete this file.

Revision ID: 0008_merge
Revises: 0007, 0007_threads
Create Date: 2026-12-07 06:00:00
"""

from collections.abc import Sequence

revision: str = "0008_merge"
down_revision: str | Sequence[str] | None = ("0007", "0007_threads")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
