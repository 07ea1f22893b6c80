"""placements: tasks point at a placement row (Python, cores, memory, datacenters) and pending
tasks are indexed by placement, user and order; users' shares of the claims

Existing tasks get the placement of their own columns (one row per distinct kind); existing
users get share 1. The claim index ``ix_tasks_claim`` gives way to the partial index
``ix_tasks_pending`` over pending tasks only.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 0")


def _key(python, ncores, memory, datacenters) -> str:
    # The canonical text of a placement, as lambdas.service.lifecycle.placement_key writes it.
    return f"{python}|{ncores}|{'' if memory is None else memory}|{datacenters or ''}"


def _fill_placements() -> None:
    conn = op.get_bind()
    placements = sa.table(
        'placements',
        sa.column('id', sa.Integer),
        sa.column('key', sa.Text),
        sa.column('python', sa.String),
        sa.column('ncores', sa.Integer),
        sa.column('memory', sa.BigInteger),
        sa.column('datacenters', sa.Text),
    )
    tasks = sa.table(
        'tasks',
        sa.column('placement_id', sa.Integer),
        sa.column('python', sa.String),
        sa.column('ncores', sa.Integer),
        sa.column('memory', sa.BigInteger),
        sa.column('datacenters', sa.Text),
    )
    kinds = conn.execute(sa.select(tasks.c.python, tasks.c.ncores, tasks.c.memory, tasks.c.datacenters).distinct())
    for python, ncores, memory, datacenters in kinds.all():
        row = {'key': _key(python, ncores, memory, datacenters), 'python': python, 'ncores': ncores}
        placement_id = conn.execute(
            placements.insert().values(**row, memory=memory, datacenters=datacenters).returning(placements.c.id)
        ).scalar_one()
        conn.execute(
            tasks.update()
            .where(
                tasks.c.python == python,
                tasks.c.ncores == ncores,
                tasks.c.memory.is_not_distinct_from(memory),
                tasks.c.datacenters.is_not_distinct_from(datacenters),
            )
            .values(placement_id=placement_id)
        )


def upgrade() -> None:
    op.create_table('placements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('python', sa.String(length=16), nullable=False),
    sa.Column('ncores', sa.Integer(), nullable=False),
    sa.Column('memory', sa.BigInteger(), nullable=True),
    sa.Column('datacenters', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_placements')),
    sa.UniqueConstraint('key', name=op.f('uq_placements_key'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('share', sa.Float(), server_default='1', nullable=False))

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('placement_id', sa.Integer(), nullable=True))
    _fill_placements()
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.alter_column('placement_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_tasks_placement_id_placements'), 'placements', ['placement_id'], ['id']
        )
        batch_op.drop_index('ix_tasks_claim')
    op.create_index(
        'ix_tasks_pending',
        'tasks',
        ['placement_id', 'user_id', 'seq'],
        unique=False,
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index('ix_tasks_pending', table_name='tasks', sqlite_where=PENDING, postgresql_where=PENDING)
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_claim', ['status', 'python', 'seq'], unique=False)
        batch_op.drop_constraint(batch_op.f('fk_tasks_placement_id_placements'), type_='foreignkey')
        batch_op.drop_column('placement_id')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('share')

    op.drop_table('placements')
