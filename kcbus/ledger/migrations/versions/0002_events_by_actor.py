"""Index ``events`` by actor: "which messages did this task instance handle" without a scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The operator view's task-instance tab lists the messages whose events carry the task's actor
(``kcbus.airflow.ui.actor.task_actor``). Without this index that is a scan of every event
(hundreds of thousands of rows at 100,000 messages); with it, an index-only range lookup
(``message_id`` is in the index, so the table is not read).

``events.actor`` stays ``VARCHAR(200)``: the ledger clips longer actors deterministically
(:func:`kcbus.ledger.clip_actor`) where it writes and where it looks them up, which keeps every
index entry far below PostgreSQL's B-tree limit (2,704 bytes) whatever the encoding.

Frozen: later changes go into new revisions, never here.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_actor_message_id", "events", ["actor", "message_id"])


def downgrade() -> None:
    op.drop_index("ix_events_actor_message_id", table_name="events")
