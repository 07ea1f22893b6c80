"""initial schema

Revision ID: 0001
Revises: 
"""

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('compute_keys',
    sa.Column('kid', sa.String(length=32), nullable=False),
    sa.Column('statement', sa.Text(), nullable=False),
    sa.Column('issued', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_compute_keys'))
    )
    op.create_table('nonces',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('expires', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('nonce', name=op.f('pk_nonces'))
    )
    with op.batch_alter_table('nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nonces_expires'), ['expires'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('sign_pub', sa.LargeBinary(length=32), nullable=False),
    sa.Column('enc_pub', sa.LargeBinary(length=32), nullable=False),
    sa.Column('certificate', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('revoked', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('key_id', name=op.f('uq_users_key_id')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('functions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_functions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_functions')),
    sa.UniqueConstraint('user_id', 'digest', name=op.f('uq_functions_user_id_digest'))
    )
    op.create_table('tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_tags_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tags')),
    sa.UniqueConstraint('name', name=op.f('uq_tags_name'))
    )
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tags_user_id'), ['user_id'], unique=False)

    op.create_table('workers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('datacenter', sa.String(length=200), nullable=False),
    sa.Column('cores', sa.Integer(), nullable=False),
    sa.Column('python', sa.String(length=16), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('registered', sa.Float(), nullable=False),
    sa.Column('last_seen', sa.Float(), nullable=False),
    sa.Column('allocated', sa.Integer(), nullable=False),
    sa.Column('running', sa.Integer(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_workers_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workers_user_id'), ['user_id'], unique=False)

    op.create_table('batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_batches_tag_id_tags')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches'))
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batches_tag_id'), ['tag_id'], unique=False)

    op.create_table('chunks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('function_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('header_len', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['function_id'], ['functions.id'], name=op.f('fk_chunks_function_id_functions')),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_chunks_tag_id_tags')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chunks')),
    sa.UniqueConstraint('key', name=op.f('uq_chunks_key'))
    )
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chunks_tag_id'), ['tag_id'], unique=False)

    op.create_table('tasks',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('chunk_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('length', sa.Integer(), nullable=False),
    sa.Column('ncores', sa.Integer(), nullable=False),
    sa.Column('python', sa.String(length=16), nullable=False),
    sa.Column('packages', sa.Text(), nullable=False),
    sa.Column('datacenters', sa.Text(), nullable=True),
    sa.Column('status', sa.SmallInteger(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.Uuid(), nullable=True),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['chunk_id'], ['chunks.id'], name=op.f('fk_tasks_chunk_id_chunks')),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_tasks_tag_id_tags')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_tasks_user_id_users')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_tasks')),
    sa.UniqueConstraint('id', name=op.f('uq_tasks_id'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_chunk', ['chunk_id'], unique=False)
        batch_op.create_index('ix_tasks_claim', ['status', 'python', 'seq'], unique=False)
        batch_op.create_index('ix_tasks_lease', ['status', 'lease_until'], unique=False)
        batch_op.create_index('ix_tasks_tag_batch', ['tag_id', 'batch_id', 'seq'], unique=False)
        batch_op.create_index('ix_tasks_tag_seq', ['tag_id', 'seq'], unique=False)
        batch_op.create_index('ix_tasks_tag_status', ['tag_id', 'status'], unique=False)
        batch_op.create_index('ix_tasks_user_status', ['user_id', 'status'], unique=False)
        batch_op.create_index('ix_tasks_worker', ['worker_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_worker')
        batch_op.drop_index('ix_tasks_user_status')
        batch_op.drop_index('ix_tasks_tag_status')
        batch_op.drop_index('ix_tasks_tag_seq')
        batch_op.drop_index('ix_tasks_tag_batch')
        batch_op.drop_index('ix_tasks_lease')
        batch_op.drop_index('ix_tasks_claim')
        batch_op.drop_index('ix_tasks_chunk')

    op.drop_table('tasks')
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chunks_tag_id'))

    op.drop_table('chunks')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batches_tag_id'))

    op.drop_table('batches')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workers_user_id'))

    op.drop_table('workers')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tags_user_id'))

    op.drop_table('tags')
    op.drop_table('functions')
    op.drop_table('users')
    with op.batch_alter_table('nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nonces_expires'))

    op.drop_table('nonces')
    op.drop_table('compute_keys')
