"""The first ledger schema: messages, message_keys, deliveries, events, blobs, audit.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Frozen: later changes go into new revisions, never here. ``events`` is append-only: a trigger
refuses UPDATE on both SQLite and PostgreSQL (rows only go away with their message, by prune).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("uuid", sa.String(64)),
        sa.Column("envelope_id", sa.String(128)),
        sa.Column("envelope_digest", sa.String(64)),
        sa.Column("parent_id", _ID),
        sa.Column("receipt_type", sa.String(32)),
        sa.Column("route", sa.String(64)),
        sa.Column("inspection", sa.String(16)),
        sa.Column("sender", sa.String(64)),
        sa.Column("recipient", sa.String(400)),
        sa.Column("message_type", sa.String(200)),
        sa.Column("standard", sa.String(100)),
        sa.Column("version", sa.String(50)),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime()),
        sa.Column("reason_code", sa.String(64)),
        sa.Column("reason", sa.Text()),
        sa.Column("source", sa.String(200)),
        sa.Column("peer", sa.String(200)),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_digest", sa.String(64)),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime()),
        sa.Column("resolved_by", sa.String(200)),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("envelope_digest", name="uq_messages_envelope_digest"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["messages.id"], name="fk_messages_parent_id_messages"
        ),
    )
    op.create_index("ix_messages_status_id", "messages", ["status", "id"])
    op.create_index("ix_messages_uuid", "messages", ["uuid"])
    op.create_index("ix_messages_route_status", "messages", ["route", "status"])
    op.create_index("ix_messages_sender_received_at", "messages", ["sender", "received_at"])
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"])

    op.create_table(
        "message_keys",
        sa.Column("uuid", sa.String(64), nullable=False),
        sa.Column("message_id", _ID, nullable=False),
        sa.PrimaryKeyConstraint("uuid", name="pk_message_keys"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_message_keys_message_id_messages",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "deliveries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime()),
        sa.Column("envelope_id", sa.String(128)),
        sa.Column("last_error_code", sa.String(64)),
        sa.Column("last_error", sa.Text()),
        sa.Column("sealed_at", sa.DateTime()),
        sa.Column("delivered_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint(
            "message_id", "destination", name="uq_deliveries_message_id_destination"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_deliveries_message_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_deliveries_status_destination_next_attempt_at",
        "deliveries",
        ["status", "destination", "next_attempt_at"],
    )

    op.create_table(
        "events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("delivery_id", _ID),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16)),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason_code", sa.String(64)),
        sa.Column("detail", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_events_message_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_events_message_id_id", "events", ["message_id", "id"])

    op.create_table(
        "blobs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("delivery_id", _ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("nonce", sa.LargeBinary(12), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blobs"),
        sa.UniqueConstraint(
            "message_id", "kind", "delivery_id", name="uq_blobs_message_id_kind_delivery_id"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_blobs_message_id_messages",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )

    # History is evidence: refuse edits to it at the database, not only in our code.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION kcbus_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'kcbus events are append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER events_append_only BEFORE UPDATE ON events "
            "FOR EACH ROW EXECUTE FUNCTION kcbus_events_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER events_append_only BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'kcbus events are append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_append_only ON events")
        op.execute("DROP FUNCTION IF EXISTS kcbus_events_append_only()")
    for table in ("audit", "blobs", "events", "deliveries", "message_keys", "messages"):
        op.drop_table(table)
