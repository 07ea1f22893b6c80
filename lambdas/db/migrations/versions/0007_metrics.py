"""per-minute samples of the fleet's load and the queue, for the dashboard's fleet page

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('metric_samples',
    sa.Column('minute', sa.BigInteger(), nullable=False),
    sa.Column('worker_id', sa.Uuid(), nullable=False),
    sa.Column('datacenter', sa.String(length=200), nullable=False),
    sa.Column('cores', sa.Integer(), nullable=False),
    sa.Column('allocated', sa.Integer(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.Column('running', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('minute', 'worker_id', name=op.f('pk_metric_samples'))
    )
    op.create_table('metric_usage',
    sa.Column('minute', sa.BigInteger(), nullable=False),
    sa.Column('worker_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('cores', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('minute', 'worker_id', 'user_id', name=op.f('pk_metric_usage'))
    )
    op.create_table('metric_queue',
    sa.Column('minute', sa.BigInteger(), nullable=False),
    sa.Column('pending', sa.BigInteger(), nullable=False),
    sa.Column('running', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('minute', name=op.f('pk_metric_queue'))
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sampled', sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('sampled')
    op.drop_table('metric_queue')
    op.drop_table('metric_usage')
    op.drop_table('metric_samples')
