"""What the ledger's query API returns: frozen rows without content.

These are the stable face of the ledger for the CLI, the Airflow tasks and the operator UI.
No field holds message content or personal data: IDs, partners (registry IDs), types, statuses,
times, reason codes and kcbus's own reason texts (which never quote content).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import RowMapping

from kcbus.ledger._status import DeliveryStatus, Kind, Status
from kcbus.ledger._tables import ACTOR_LENGTH

__all__ = [
    "ActionOutcome",
    "CountRow",
    "DeliveryRow",
    "EventRow",
    "GroupBy",
    "History",
    "MessageFilter",
    "MessageRow",
    "clip_actor",
]

GroupBy = Literal["status", "route", "sender", "recipient", "message_type"]


@dataclass(frozen=True)
class MessageRow:
    ledger_id: int
    kind: Kind
    uuid: str | None
    envelope_id: str | None
    parent_id: int | None
    receipt_type: str | None
    route: str | None
    inspection: str | None
    sender: str | None
    recipient: str | None
    message_type: str | None
    standard: str | None
    version: str | None
    test: bool
    status: Status
    attempts: int
    next_attempt_at: datetime | None
    reason_code: str | None
    reason: str | None
    source: str | None
    peer: str | None
    size: int
    received_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None

    @property
    def ref(self) -> str:
        """How an operator names it: its UUID, or ``#<ledger id>`` before it was opened."""
        return self.uuid or f"#{self.ledger_id}"

    @property
    def end_to_end(self) -> bool:
        return self.inspection == "end-to-end"

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @classmethod
    def from_mapping(cls, row: RowMapping | Mapping[str, object]) -> MessageRow:
        values = {name: row[name] for name in _MESSAGE_FIELDS if name != "ledger_id"}
        values["kind"] = Kind(str(row["kind"]))
        values["status"] = Status(str(row["status"]))
        values["test"] = bool(row["test"])
        return cls(ledger_id=int(str(row["id"])), **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    message_id: int
    destination: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    envelope_id: str | None
    last_error_code: str | None
    last_error: str | None
    sealed_at: datetime | None
    delivered_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_mapping(cls, row: RowMapping | Mapping[str, object]) -> DeliveryRow:
        values = {name: row[name] for name in _DELIVERY_FIELDS}
        values["status"] = DeliveryStatus(str(row["status"]))
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EventRow:
    id: int
    message_id: int
    delivery_id: int | None
    at: datetime
    stage: str
    status: str | None
    actor: str
    reason_code: str | None
    detail: str | None


@dataclass(frozen=True)
class History:
    """One message: its row, every event in order, its deliveries and its receipts."""

    message: MessageRow
    events: tuple[EventRow, ...]
    deliveries: tuple[DeliveryRow, ...]
    receipts: tuple[MessageRow, ...]
    #: False for end-to-end routes: the bus never held the readable content.
    content_available: bool


@dataclass(frozen=True)
class MessageFilter:
    """Search facts; ``None``/empty means "any". ``partner`` matches sender or a destination.

    ``uuid`` is the partner's message ID: a UUID (compared case-insensitively, RFC 4122 §3) or
    any other ID (a CDA ``root^extension``, an XJustiz ID; compared exactly). ``actor`` matches
    messages with at least one event by that actor (e.g. an Airflow task instance, see
    ``kcbus.airflow.ui.actor.task_actor``); it is clipped like the ledger clips what it writes.
    """

    uuid: str | None = None
    ledger_ids: tuple[int, ...] = ()
    status: tuple[Status, ...] = ()
    kind: Kind | None = None
    route: str | None = None
    sender: str | None = None
    recipient: str | None = None
    partner: str | None = None
    message_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    resolved: bool | None = None
    actor: str | None = None


@dataclass(frozen=True)
class CountRow:
    """Messages received in ``[bucket, bucket + width)`` having ``key`` (a status, route...)."""

    bucket: datetime
    key: str
    count: int


@dataclass(frozen=True)
class ActionOutcome:
    """Result of an operator action (resend, resolve) over many messages."""

    action: str
    actor: str
    reason: str
    acted: tuple[MessageRow, ...] = ()
    #: (reference, why) for each matching message the action did not apply to.
    skipped: tuple[tuple[str, str], ...] = field(default=())


def clip_actor(actor: str) -> str:
    """``actor`` as the ledger stores it: unchanged up to ``ACTOR_LENGTH`` characters, else
    its head and tail around a SHA-256 digest of the whole (deterministic and collision-safe,
    so writing and looking up the same long actor agree; both ends stay readable: an Airflow
    task actor names its DAG first and its task last)."""
    if len(actor) <= ACTOR_LENGTH:
        return actor
    digest = hashlib.sha256(actor.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    keep = (ACTOR_LENGTH - len(digest) - 2) // 2
    return f"{actor[:keep]}…{digest}…{actor[len(actor) - keep :]}"


_MESSAGE_FIELDS = tuple(f for f in MessageRow.__dataclass_fields__)
_DELIVERY_FIELDS = tuple(f for f in DeliveryRow.__dataclass_fields__)
