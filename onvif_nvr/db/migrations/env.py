"""Alembic environment: the caller hands over an open connection (see db/engine.py)."""

from alembic import context

from onvif_nvr.db.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
