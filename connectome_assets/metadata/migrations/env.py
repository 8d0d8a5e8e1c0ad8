"""Alembic environment: runs on the connection the caller hands over (see store.migrate)."""

from alembic import context

from connectome_assets.metadata.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
