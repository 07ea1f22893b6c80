"""Alembic environment: runs on the connection handed in by ``lambdas.db.migrate``."""

from alembic import context

from lambdas.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via lambdas.db.migrate
    raise RuntimeError("run migrations through lambdas.db.migrate(engine)")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
