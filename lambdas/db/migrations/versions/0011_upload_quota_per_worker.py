"""a worker's unregistered result uploads are counted per worker, not per worker identity

The workers of a fleet often share one identity, and each keeps spare result upload URLs: with
one quota for the identity, a fleet of a hundred or so workers ran out of URLs and could not
report results until the unused ones were swept. ``uploads.worker_id`` names the worker a
result upload URL was issued to (NULL for a user's uploads, which stay counted per user).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('uploads') as batch:
        batch.add_column(sa.Column('worker_id', sa.Uuid(), nullable=True))
        batch.create_index('ix_uploads_worker_id', ['worker_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('uploads') as batch:
        batch.drop_index('ix_uploads_worker_id')
        batch.drop_column('worker_id')
