"""The ledger (message store): SQLAlchemy on SQLite (WAL, embedded) or PostgreSQL.

``Ledger(url)`` — query API for operators and the UI, operator actions (resend, resolve)
recorded with actor and reason, a unit of work per pipeline stage and batch, content encrypted
at rest (AES-256-GCM, key ID per blob; large blobs in chunks, streamed), Alembic migrations,
backup/restore and retention.
"""

from __future__ import annotations

from kcbus.ledger._backup import FORMAT as BACKUP_FORMAT
from kcbus.ledger._chunks import INLINE_MAX as BLOB_INLINE_MAX
from kcbus.ledger._chunks import BlobWriter, StoredBlob
from kcbus.ledger._content import ContentKeyring
from kcbus.ledger._ledger import DEFAULT_URL, Ledger, default_url
from kcbus.ledger._models import (
    ActionOutcome,
    CountRow,
    DeliveryRow,
    EventRow,
    GroupBy,
    History,
    MessageFilter,
    MessageRow,
    clip_actor,
)
from kcbus.ledger._status import SETTLED, DeliveryStatus, Kind, Status
from kcbus.ledger._tables import ACTOR_LENGTH
from kcbus.ledger._unit import BlobSource, NewEnvelope, NewMessage, Unit

__all__ = [
    "ACTOR_LENGTH",
    "BACKUP_FORMAT",
    "BLOB_INLINE_MAX",
    "DEFAULT_URL",
    "SETTLED",
    "ActionOutcome",
    "BlobSource",
    "BlobWriter",
    "ContentKeyring",
    "CountRow",
    "DeliveryRow",
    "DeliveryStatus",
    "EventRow",
    "GroupBy",
    "History",
    "Kind",
    "Ledger",
    "MessageFilter",
    "MessageRow",
    "NewEnvelope",
    "NewMessage",
    "Status",
    "StoredBlob",
    "Unit",
    "clip_actor",
    "default_url",
]
