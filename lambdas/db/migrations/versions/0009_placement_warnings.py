"""tags keep the placements their tasks were submitted with, workers the package environments
they are building, for the tag status's warnings

Tags made before this revision have no placements (their pending tasks are scanned instead);
workers have reported no build.

Revision ID: 0009
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.add_column(sa.Column('placements', sa.Text(), nullable=True))
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('building', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('building')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_column('placements')
