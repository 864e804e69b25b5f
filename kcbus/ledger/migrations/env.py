"""Alembic environment: always run programmatically with a connection in ``attributes``.

On PostgreSQL an advisory lock serialises concurrent migrators (several workers starting at
once); on SQLite the write transaction (BEGIN IMMEDIATE) does the same.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from kcbus.ledger._tables import metadata

_LOCK_KEY = 0x6B63627573  # "kcbus"

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
if connection.dialect.name == "postgresql":
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
with context.begin_transaction():
    context.run_migrations()
