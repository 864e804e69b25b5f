"""Large blobs in chunks: ``blob_chunks`` and ``blobs.chunks``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

A Bauantrag with building plans is hundreds of MB. Stored as one ``blobs.data`` value it had
to be hashed, encrypted and read back whole (twice its size in memory at several stages).
Now a blob above 8 MiB keeps an empty ``data`` and ``chunks`` = n, and its content is n rows
of ``blob_chunks`` (~1 MiB each, each AES-256-GCM on its own, see
:mod:`kcbus.ledger._chunks`). Small blobs are unchanged (``chunks`` = 0). The chunks stay in
the database, so the receive → commit → acknowledge invariant and sharing one PostgreSQL ledger
between workers hold as before.

Frozen: later changes go into new revisions, never here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("blobs", sa.Column("chunks", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "blob_chunks",
        sa.Column("blob_id", _ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("nonce", sa.LargeBinary(12), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "seq", name="pk_blob_chunks"),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blobs.id"], name="fk_blob_chunks_blob_id_blobs", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    # Revision 0002 cannot hold a chunked blob: dropping the chunks would leave those blobs
    # empty for good. Refuse; the operator prunes or restores first.
    chunked = op.get_bind().execute(sa.text("SELECT count(*) FROM blobs WHERE chunks > 0"))
    count = chunked.scalar_one()
    if count:
        raise RuntimeError(
            f"cannot downgrade below 0003: {count} blobs are stored in chunks (prune the "
            "messages that hold them, or keep this revision)"
        )
    op.drop_table("blob_chunks")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("chunks")
