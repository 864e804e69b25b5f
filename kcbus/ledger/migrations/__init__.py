"""Alembic migrations of the ledger schema; run by :meth:`kcbus.ledger.Ledger.migrate`."""
