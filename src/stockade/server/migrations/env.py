"""Alembic environment: runs on the engine the server passes in (db.upgrade), or on $STOCKADE_DATABASE_URL."""

from __future__ import annotations

from alembic import context

from stockade.server.db import default_url, make_engine, metadata

config = context.config
engine = config.attributes.get("connection_engine") or make_engine(default_url())

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
