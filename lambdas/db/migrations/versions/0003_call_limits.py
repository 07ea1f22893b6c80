"""per-call limits: timeout, memory, retries; lease deadlines; worker memory

Tasks submitted before this revision have no timeout, no memory limit and no retries, as their
signed chunk headers do (workers enforce what the header says).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timeout', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('memory', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('retries', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('deadline', sa.Float(), nullable=True))

    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('memory', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('memory')

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('deadline')
        batch_op.drop_column('failures')
        batch_op.drop_column('retries')
        batch_op.drop_column('memory')
        batch_op.drop_column('timeout')
