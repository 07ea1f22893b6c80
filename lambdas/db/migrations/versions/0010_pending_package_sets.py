"""pending tasks' package sets are indexed by placement, so that the package sets a worker
pre-builds are read per placement and set, not from every pending task

``ix_tasks_pending_packages`` holds the pending tasks with a package set of at most 600
characters (its text: within a PostgreSQL btree entry), ``ix_tasks_pending_long_packages`` the
others. Both are partial indexes over pending tasks: completed tasks are in neither.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

SHORT = sa.text("status = 0 AND packages <> '[]' AND length(packages) <= 600")
LONG = sa.text("status = 0 AND length(packages) > 600")


def upgrade() -> None:
    op.create_index(
        'ix_tasks_pending_packages',
        'tasks',
        ['placement_id', 'packages'],
        unique=False,
        sqlite_where=SHORT,
        postgresql_where=SHORT,
    )
    op.create_index(
        'ix_tasks_pending_long_packages',
        'tasks',
        ['placement_id'],
        unique=False,
        sqlite_where=LONG,
        postgresql_where=LONG,
    )


def downgrade() -> None:
    op.drop_index('ix_tasks_pending_long_packages', table_name='tasks', sqlite_where=LONG, postgresql_where=LONG)
    op.drop_index('ix_tasks_pending_packages', table_name='tasks', sqlite_where=SHORT, postgresql_where=SHORT)
