"""Chunked blobs bound to their version: ``blobs.salt``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

The associated data of a 0003 chunk names its place and position (message, kind, delivery,
index, final) but not which blob stood there: when a place is written again (a re-seal after a
resend) under the same content key, a chunk of the earlier blob, kept by someone with write
access to the database, opened inside the new one. Since 0004 a chunked blob that the ledger
encrypts gets 16 random bytes, ``salt``, stored in its ``blobs`` row and named in every chunk's
associated data (``kcbus-ledger-chunk/2``, see :mod:`kcbus.ledger._chunks`).

``salt`` is NULL for inline blobs, for blobs stored as sealed (no AES layer, no associated
data), and for chunked blobs written before this revision: those keep the 0003 binding and
still open; :meth:`Ledger.reencrypt` gives them a salt when it moves them to a new key.
Adding a nullable column rewrites nothing (PostgreSQL and SQLite only change the catalogue).

Frozen: later changes go into new revisions, never here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("salt", sa.LargeBinary(16), nullable=True))


def downgrade() -> None:
    # 0003's code reads every chunk with the 0003 associated data: a salted blob would fail
    # its integrity check there, for good. Refuse; the operator prunes first or stays here.
    bind = op.get_bind()
    salted = bind.execute(sa.text("SELECT count(*) FROM blobs WHERE salt IS NOT NULL"))
    count = salted.scalar_one()
    if count:
        raise RuntimeError(
            f"cannot downgrade below 0004: {count} chunked blobs are bound to their salt, "
            "which revision 0003 cannot open (prune the messages that hold them, or keep "
            "this revision)"
        )
    # Not a batch operation: on SQLite that copies ``blobs`` into a new table and drops the
    # old one, and with foreign keys on, the drop deletes every chunk (ON DELETE CASCADE).
    # SQLite drops a plain column in place since 3.35.
    op.drop_column("blobs", "salt")
