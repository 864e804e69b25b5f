"""The ledger's tables (SQLAlchemy Core). Migrations in ``migrations/versions`` create them.

Invariants:
- ``messages``: one row per message or receipt; ``envelope_digest`` (SHA-256 of the envelope
  as received) is unique, so a redelivered envelope never becomes a second row.
- ``message_keys``: one row per accepted message UUID; the first message with a UUID owns it,
  a later one is DUPLICATE. Inserting here is how concurrent workers agree on that.
- ``events``: append-only history; a database trigger refuses UPDATE (see migration 0001).
- ``blobs``: content, encrypted (AES-256-GCM) with the key named by ``key_id``; the
  associated data binds each ciphertext to its (message, kind, delivery), so blobs cannot be
  swapped between rows unnoticed. Envelopes the bus sealed for a recipient are ciphertext
  already and are stored as sealed (``key_id`` = ``as-sealed``, empty nonce; see
  :mod:`kcbus.ledger._unit`). A large blob (above :data:`kcbus.ledger._chunks.INLINE_MAX`)
  keeps an empty ``data`` and ``chunks`` > 0: its content is in ``blob_chunks`` (migration
  0003), one row per ~1 MiB piece, each encrypted on its own (see :mod:`kcbus.ledger._chunks`);
  an encrypted one written since migration 0004 has a random ``salt`` that every chunk's
  associated data names, so a chunk of an earlier blob at the same place does not open in it.
- ``audit``: operator actions that touch many rows (backup, restore, prune, key rotation).
- Actors (``events.actor``, ``audit.actor``, ``messages.resolved_by``) hold at most
  :data:`ACTOR_LENGTH` characters; longer ones are clipped deterministically by
  :func:`kcbus.ledger.clip_actor` wherever the ledger writes or looks them up. ``events`` is
  indexed by (actor, message) for "which messages did this actor touch" (migration 0002).
Times are UTC; :class:`UTCDateTime` stores them naive-UTC and returns them timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

__all__ = [
    "ACTOR_LENGTH",
    "HEAD_REVISION",
    "UTCDateTime",
    "audit",
    "blob_chunks",
    "blobs",
    "deliveries",
    "events",
    "message_keys",
    "messages",
    "metadata",
]

#: The Alembic revision this code's tables correspond to.
HEAD_REVISION = "0004"

#: Characters an actor column holds. 200 characters stay far below PostgreSQL's B-tree entry
#: limit (2,704 bytes) even in 4-byte UTF-8, so ``ix_events_actor_message_id`` can never refuse
#: a row; Airflow's task actors (three IDs of up to 250 characters each) are clipped to fit.
ACTOR_LENGTH = 200


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database (same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # the common case, cheaply
            return value.replace(tzinfo=None)
        if value.tzinfo is None:
            raise ValueError("ledger times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (autoincrementing).
_ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

messages = Table(
    "messages",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("uuid", String(64)),
    Column("envelope_id", String(128)),
    Column("envelope_digest", String(64), unique=True),
    Column("parent_id", _ID, ForeignKey("messages.id")),
    Column("receipt_type", String(32)),
    Column("route", String(64)),
    Column("inspection", String(16)),
    Column("sender", String(64)),
    Column("recipient", String(400)),
    Column("message_type", String(200)),
    Column("standard", String(100)),
    Column("version", String(50)),
    Column("test", Boolean, nullable=False, default=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("reason_code", String(64)),
    Column("reason", Text),
    Column("source", String(200)),
    Column("peer", String(200)),
    Column("size", BigInteger, nullable=False, default=0),
    Column("content_digest", String(64)),
    Column("received_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Column("resolved_by", String(ACTOR_LENGTH)),
    Index(None, "status", "id"),
    Index(None, "uuid"),
    Index(None, "route", "status"),
    Index(None, "sender", "received_at"),
    Index(None, "received_at"),
    Index(None, "parent_id"),
)

message_keys = Table(
    "message_keys",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("message_id", _ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("message_id", _ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("envelope_id", String(128)),
    Column("last_error_code", String(64)),
    Column("last_error", Text),
    Column("sealed_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("message_id", "destination"),
    Index(None, "status", "destination", "next_attempt_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("message_id", _ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("delivery_id", _ID),
    Column("at", UTCDateTime, nullable=False),
    Column("stage", String(32), nullable=False),
    Column("status", String(16)),
    Column("actor", String(ACTOR_LENGTH), nullable=False),
    Column("reason_code", String(64)),
    Column("detail", Text),
    Index(None, "message_id", "id"),
    # "Messages this actor touched" (the task-instance tab): an index-only lookup.
    Index(None, "actor", "message_id"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("message_id", _ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    # 0 = the message itself (not per destination); else deliveries.id
    Column("delivery_id", _ID, nullable=False, default=0),
    Column("kind", String(16), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("nonce", LargeBinary(12), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    # 0: the content is ``data``; n > 0: ``data`` is empty, the content is n blob_chunks rows.
    Column("chunks", Integer, nullable=False, server_default="0"),
    # Chunked and encrypted: 16 random bytes naming this blob in its chunks' associated data.
    # NULL: inline, stored as sealed, or chunked before migration 0004 (chunk binding v1).
    Column("salt", LargeBinary(16)),
    UniqueConstraint("message_id", "kind", "delivery_id"),
)

blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("blob_id", _ID, ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("nonce", LargeBinary(12), nullable=False),  # empty for AS_SEALED blobs
    Column("data", LargeBinary, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(ACTOR_LENGTH), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", Text),
)
