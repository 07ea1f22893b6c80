"""function objects a worker found corrupt; tag names and task ids unique per user; uploads not
registered yet

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('uploads',
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('issued', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_uploads_user_id_users')),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_uploads'))
    )
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uploads_issued'), ['issued'], unique=False)
        batch_op.create_index(batch_op.f('ix_uploads_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('functions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('corrupt', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_tags_name'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_tags_user_id_name'), ['user_id', 'name'])

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_tasks_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_tasks_user_id_id'), ['user_id', 'id'])
        batch_op.create_index('ix_tasks_id', ['id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_id')
        batch_op.drop_constraint(batch_op.f('uq_tasks_user_id_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_tasks_id'), ['id'])

    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_tags_user_id_name'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_tags_name'), ['name'])

    with op.batch_alter_table('functions', schema=None) as batch_op:
        batch_op.drop_column('corrupt')

    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_uploads_user_id'))
        batch_op.drop_index(batch_op.f('ix_uploads_issued'))
    op.drop_table('uploads')
