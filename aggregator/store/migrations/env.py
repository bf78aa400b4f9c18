"""Alembic environment: runs on the connection `aggregator.store.migrate` hands over.

That connection is already inside the transaction holding the migration lock
(PostgreSQL advisory lock / SQLite BEGIN IMMEDIATE), so `begin_transaction` below
joins it instead of committing on its own: the revisions and the alembic_version
row commit together, when the lock is released. Run migrations through
`v2x migrate`, not the bare `alembic` command, so the lock is always taken.
"""
from alembic import context

from aggregator.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `v2x migrate` (aggregator.store.migrate), which takes the migration lock")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
