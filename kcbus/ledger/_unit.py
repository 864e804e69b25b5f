"""A unit of work: one transaction in which a pipeline stage claims a batch and records results.

Invariants:
- Everything a stage does to a batch commits together or not at all. A crash (even ``kill -9``)
  before the commit leaves the batch exactly as it was claimed: the stage runs again.
- Claims: PostgreSQL locks the claimed rows (``FOR UPDATE SKIP LOCKED``) until the commit, so
  concurrent workers take disjoint batches. SQLite has one writer at a time (``BEGIN
  IMMEDIATE``): a second worker waits for the first's commit, then sees the new statuses.
- Writes are queued and flushed with ``executemany`` (one statement per shape, not per row).
  Inserts whose IDs are needed (new messages, deliveries) run at once with ``RETURNING``.
- Each status change writes an event row with the unit's time and actor.
- Content at rest is encrypted. Plaintext (messages, facts, receipts) goes through the ledger's
  AES-256-GCM key ring. An envelope the bus sealed for a recipient (``put_blob(...,
  encrypt=False)``) is already ciphertext — JWE for that recipient, signed by the bus — so it is
  stored as sealed, marked :data:`AS_SEALED` instead of a ledger key ID: a second AES layer would
  hide nothing more (without the recipient's private key the database reader learns only the
  JWE header: key IDs, algorithms, envelope ID) and cost a pass over ~36 KB per delivery on
  write and read. Rotating the ledger key does not touch such blobs (they name no ledger key).
  What the ledger AAD adds for plaintext — a blob copied onto another row fails to open — the
  envelope has itself: the recipient verifies the bus's signature and the envelope's AEAD tag,
  and a swapped envelope is sealed for another recipient, who cannot open it.
  A *received* envelope keeps the AES layer: its bytes are whatever a partner (or anyone who
  can reach an inbound transport) sent, stored before anything is checked — a plaintext
  message sent by mistake, or a malformed one, would otherwise lie in the database as sent.
  The layer costs ~16 µs per 27 KB envelope each way (measured: ~1 % of a message's CPU).
- A re-seal replaces the earlier sealed blob of the same delivery in one upsert (no DELETE).
- Large content goes in and out as streams (:meth:`Unit.put_blob_stream`,
  :meth:`Unit.blob_writer`, :meth:`Unit.open_blob`, :meth:`Unit.blob_sources`): above
  :data:`~kcbus.ledger._chunks.INLINE_MAX` it is stored in ~1 MiB chunks, each encrypted on its
  own (:mod:`kcbus.ledger._chunks`), and never held whole. :meth:`Unit.blobs` still gives
  ``bytes`` (reading a chunked blob whole) for the small kinds (facts, full-inspection content).
- Hand-over in memory: the unit knows the messages it claimed or created and every change it
  made to them (:meth:`Unit.current`), and the deliveries it created
  (:meth:`Unit.take_new_deliveries`), so the next stage in the same transaction works on them
  without reading them back. They are this transaction's own rows: locked by its claims
  (PostgreSQL) or by the single writer (SQLite), so no other worker changes them meanwhile.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import UpdateBase

from kcbus._errors import LedgerError
from kcbus.ledger._chunks import CHUNK, BlobWriter, ChunkedBlob, StoredBlob, open_chunked
from kcbus.ledger._content import ContentKeyring
from kcbus.ledger._models import DeliveryRow, MessageRow
from kcbus.ledger._status import DeliveryStatus, Kind, Status
from kcbus.ledger._tables import blob_chunks, blobs, deliveries, events, message_keys, messages

__all__ = [
    "AS_SEALED",
    "BlobSource",
    "NewEnvelope",
    "NewMessage",
    "StoredBlob",
    "Unit",
    "blob_associated_data",
]

#: ``blobs.key_id`` of a blob stored as sealed for its recipient, without the ledger's AES
#: layer (ledger key IDs are ``k`` + hex: no clash).
AS_SEALED = "as-sealed"


def blob_associated_data(message_id: int, kind: str, delivery_id: int) -> bytes:
    return f"kcbus-ledger/1:{message_id}:{kind}:{delivery_id}".encode()


#: A stored blob as :meth:`Unit.blob_sources` gives it: small ones in memory, large ones to
#: stream.
BlobSource = bytes | StoredBlob


@dataclass(frozen=True)
class NewEnvelope:
    """An envelope as a transport handed it over (receive stage): ``data`` in memory, or a
    ``stream`` (a binary file positioned anywhere, or a path) read in chunks — twice: once to
    hash it (the ledger deduplicates by SHA-256 before it stores), once to store it. ``size``
    is informational for a stream (-1: unknown); the ledger counts what it reads."""

    data: bytes | None
    envelope_id: str | None
    source: str | None
    peer: str | None
    stream: BinaryIO | Path | None = None
    size: int = -1

    def __post_init__(self) -> None:
        if (self.data is None) == (self.stream is None):
            raise ValueError("NewEnvelope needs exactly one of data= or stream=")
        if self.data is not None:
            object.__setattr__(self, "size", len(self.data))


@dataclass(frozen=True)
class NewMessage:
    """A message kcbus creates itself (a receipt), already routed to its destination."""

    kind: Kind
    uuid: str
    parent_id: int | None
    receipt_type: str | None
    route: str | None
    sender: str
    destination: str
    message_type: str
    standard: str
    version: str
    test: bool
    content: bytes


class Unit:
    """One transaction of a stage over one batch; get it from :meth:`Ledger.unit`."""

    def __init__(
        self, conn: Connection, keys: ContentKeyring, *, actor: str, now: datetime
    ) -> None:
        self._conn = conn
        self._keys = keys
        self.actor = actor
        self.now = now
        self._postgres = conn.dialect.name == "postgresql"
        # Pending column changes by row ID; several stages in one unit coalesce into one
        # UPDATE per row at the next flush.
        self._message_updates: dict[int, dict[str, object]] = {}
        self._delivery_updates: dict[int, dict[str, object]] = {}
        self._events: list[dict[str, object]] = []
        self._blobs: list[dict[str, object]] = []
        self._blob_replaced: list[dict[str, object]] = []  # upserts
        # Plaintext of blobs written in this unit: a later stage in the same unit reads them
        # from here instead of the database (no second decryption).
        self._written: dict[tuple[int, str, int], bytes] = {}
        # Rows as claimed or created, and every change since (see ``current``).
        self._rows: dict[int, MessageRow] = {}
        self._changes: dict[int, dict[str, object]] = {}
        self._new_deliveries: list[DeliveryRow] = []

    # -- claims -----------------------------------------------------------------------------

    def claim(
        self,
        statuses: Sequence[Status],
        limit: int,
        *,
        route: str | None = None,
        kind: Kind | None = None,
        due: bool = True,
    ) -> list[MessageRow]:
        """Lock up to ``limit`` messages in one of ``statuses``, oldest first.

        With ``due``, messages whose ``next_attempt_at`` lies in the future are left alone
        (a stage that hit a passing problem set it).
        """
        self.flush()
        query = select(messages).where(messages.c.status.in_([str(s) for s in statuses]))
        if due:
            query = query.where(
                or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= self.now)
            )
        if route is not None:
            query = query.where(messages.c.route == route)
        if kind is not None:
            query = query.where(messages.c.kind == str(kind))
        query = query.order_by(messages.c.id).limit(limit).with_for_update(skip_locked=True)
        rows = [MessageRow.from_mapping(r) for r in self._conn.execute(query).mappings()]
        self._remember(rows)
        return rows

    def claim_deliveries(
        self,
        limit: int,
        *,
        statuses: Sequence[DeliveryStatus],
        destination: str | None = None,
        due: bool = True,
    ) -> list[tuple[DeliveryRow, MessageRow]]:
        """Lock due deliveries (and their messages, whose status they decide), oldest first."""
        self.flush()
        d = deliveries
        query = (
            select(d, messages)
            .join(messages, messages.c.id == d.c.message_id)
            .where(d.c.status.in_([str(s) for s in statuses]))
        )
        if destination is not None:
            query = query.where(d.c.destination == destination)
        if due:
            query = query.where(or_(d.c.next_attempt_at.is_(None), d.c.next_attempt_at <= self.now))
        query = query.order_by(d.c.id).limit(limit).with_for_update(skip_locked=True)
        out = []
        width = len(d.c)
        names = [c.name for c in messages.c]
        for row in self._conn.execute(query).all():
            values = tuple(row)
            delivery = DeliveryRow(*values[:width])  # field order = column order
            delivery = replace(delivery, status=DeliveryStatus(delivery.status))
            message = MessageRow.from_mapping(dict(zip(names, values[width:], strict=True)))
            out.append((delivery, message))
        self._remember(m for _, m in out)
        return out

    # -- inserts (immediate: their IDs are needed) -----------------------------------------

    def receive(self, items: Sequence[NewEnvelope]) -> list[int | None]:
        """Store envelopes as RECEIVED; ``None`` for one already in the ledger (redelivery)."""
        if not items:
            return []
        measured = [_measure(item) for item in items]
        rows = []
        seen: set[str] = set()
        for item, (digest, size) in zip(items, measured, strict=True):
            if digest in seen:
                continue
            seen.add(digest)
            rows.append(
                {
                    "kind": str(Kind.MESSAGE),
                    "envelope_id": item.envelope_id,
                    "envelope_digest": digest,
                    "status": str(Status.RECEIVED),
                    "test": False,
                    "attempts": 0,
                    "size": size,
                    "source": item.source,
                    "peer": item.peer,
                    "received_at": self.now,
                    "updated_at": self.now,
                }
            )
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        stmt = (
            dialect_insert(messages)
            .on_conflict_do_nothing(index_elements=["envelope_digest"])
            .returning(messages.c.id, messages.c.envelope_digest)
        )
        inserted = {
            row.envelope_digest: int(row.id) for row in self._conn.execute(stmt, rows).all()
        }
        ids: list[int | None] = []
        taken: set[str] = set()
        for item, (digest, size) in zip(items, measured, strict=True):
            message_id = inserted.get(digest) if digest not in taken else None
            taken.add(digest)
            ids.append(message_id)
            if message_id is not None:
                if item.data is not None:
                    self.put_blob(message_id, "envelope", item.data, digest=digest)
                else:
                    assert item.stream is not None
                    self.put_blob_stream(message_id, "envelope", item.stream)
                self.event(message_id, "receive", Status.RECEIVED, detail=_via(item, size))
        return ids

    def create(self, items: Sequence[NewMessage]) -> list[tuple[int, int]]:
        """Insert messages kcbus wrote (receipts) as ROUTED with one delivery each.

        Returns ``(message_id, delivery_id)`` per item, in order.
        """
        if not items:
            return []
        rows: list[dict[str, object]] = [
            {
                "kind": str(item.kind),
                "uuid": item.uuid,
                "parent_id": item.parent_id,
                "receipt_type": item.receipt_type,
                "route": item.route,
                "inspection": "full",
                "sender": item.sender,
                "recipient": item.destination,
                "message_type": item.message_type,
                "standard": item.standard,
                "version": item.version,
                "test": item.test,
                "status": str(Status.ROUTED),
                "attempts": 0,
                "size": len(item.content),
                "content_digest": hashlib.sha256(item.content).hexdigest(),
                "received_at": self.now,
                "updated_at": self.now,
            }
            for item in items
        ]
        ids = self._insert_ids(messages, rows)
        self._remember(
            MessageRow.from_mapping({**_UNSET, **row, "id": message_id})
            for row, message_id in zip(rows, ids, strict=True)
        )
        self._conn.execute(
            insert(message_keys),
            [{"uuid": i.uuid, "message_id": m} for i, m in zip(items, ids, strict=True)],
        )
        delivery_ids = self.add_deliveries(
            [(m, item.destination) for item, m in zip(items, ids, strict=True)]
        )
        for item, message_id in zip(items, ids, strict=True):
            self.put_blob(message_id, "content", item.content)
            self.event(message_id, "route", Status.ROUTED, detail=f"to {item.destination}")
        return list(zip(ids, delivery_ids, strict=True))

    def add_deliveries(self, pairs: Sequence[tuple[int, str]]) -> list[int]:
        """One PENDING delivery per ``(message_id, destination)``; returns their IDs."""
        if not pairs:
            return []
        rows = [
            {
                "message_id": m,
                "destination": dest,
                "status": str(DeliveryStatus.PENDING),
                "attempts": 0,
                "updated_at": self.now,
            }
            for m, dest in pairs
        ]
        ids = self._insert_ids(deliveries, rows)
        self._new_deliveries.extend(
            DeliveryRow(
                id=delivery_id,
                message_id=m,
                destination=dest,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=None,
                envelope_id=None,
                last_error_code=None,
                last_error=None,
                sealed_at=None,
                delivered_at=None,
                updated_at=self.now,
            )
            for delivery_id, (m, dest) in zip(ids, pairs, strict=True)
        )
        return ids

    def _insert_ids(self, table: Table, rows: list[dict[str, object]]) -> list[int]:
        """Insert ``rows`` (all with the same keys) at once; their new IDs, in order.

        PostgreSQL: ``INSERT … RETURNING`` in parameter order. SQLite cannot promise the
        order of ``RETURNING`` rows, so SQLAlchemy would run that as one statement per row
        (~5 per message with receipts). Instead: one ``executemany`` without ``RETURNING``,
        and the IDs from the table's largest ID before and after. SQLite gives a new row of a
        rowid table the largest rowid + 1; this transaction is the only writer (``BEGIN
        IMMEDIATE``), so the rows got exactly the IDs after the old largest one — checked: the
        new largest must be the old one plus the row count (it is not when SQLite ever had to
        pick rowids at random, at the top of the 64-bit range; then this refuses)."""
        if self._postgres:
            stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            return [int(r.id) for r in self._conn.execute(stmt, rows).all()]
        largest = f"SELECT max(id) FROM {table.name}"
        before = int(self._conn.exec_driver_sql(largest).scalar() or 0)
        self._many(("insert", table.name, *rows[0]), lambda: insert(table), rows)
        after = int(self._conn.exec_driver_sql(largest).scalar() or 0)
        if after != before + len(rows):
            raise LedgerError(f"{table.name}: new IDs are not consecutive; nothing was written")
        return list(range(before + 1, after + 1))

    def take_new_deliveries(self) -> list[DeliveryRow]:
        """The PENDING deliveries created in this unit since the last call (route stage,
        receipts), for the seal stage in the same unit; each is handed out once."""
        taken, self._new_deliveries = self._new_deliveries, []
        return taken

    def current(self, message_id: int) -> MessageRow | None:
        """A message this unit claimed or created, with every change the unit made to it;
        ``None`` for one it does not know (read it with :meth:`messages_by_id`)."""
        row = self._rows.get(message_id)
        if row is None:
            return None
        changes = self._changes.get(message_id)
        if not changes:
            return row
        known = {k: v for k, v in changes.items() if k in _ROW_FIELDS}
        if "status" in known:
            known["status"] = Status(str(known["status"]))
        if "kind" in known:
            known["kind"] = Kind(str(known["kind"]))
        return replace(row, **known)  # type: ignore[arg-type]

    def _remember(self, rows: Iterable[MessageRow]) -> None:
        for row in rows:
            self._rows[row.ledger_id] = row
            self._changes.pop(row.ledger_id, None)  # as read now: earlier changes included

    def claim_uuids(self, pairs: Sequence[tuple[int, str]]) -> dict[int, int | None]:
        """Record each message UUID as taken; for a UUID already taken, the original's ID.

        Uses the ``message_keys`` primary key: of two workers claiming one UUID at once, the
        second waits for the first's commit and then finds it taken.
        """
        out: dict[int, int | None] = {}
        if not pairs:
            return out
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        first: dict[str, int] = {}
        rows = []
        for message_id, uuid in pairs:
            if uuid in first:
                out[message_id] = first[uuid]
                continue
            first[uuid] = message_id
            rows.append({"uuid": uuid, "message_id": message_id})
        stmt = (
            dialect_insert(message_keys)
            .on_conflict_do_nothing(index_elements=["uuid"])
            .returning(message_keys.c.uuid)
        )
        won = {r.uuid for r in self._conn.execute(stmt, rows).all()}
        lost = [row["uuid"] for row in rows if row["uuid"] not in won]
        owners: dict[str, int] = {}
        if lost:
            owners = {
                r.uuid: int(r.message_id)
                for r in self._conn.execute(
                    select(message_keys).where(message_keys.c.uuid.in_(lost))
                ).all()
            }
        for row in rows:
            uuid = str(row["uuid"])
            out[int(str(row["message_id"]))] = owners.get(uuid) if uuid in owners else None
        return out

    # -- queued writes ----------------------------------------------------------------------

    def update(self, message_id: int, **fields: object) -> None:
        """Change columns of a message (flushed at commit); ``updated_at`` is set too."""
        fields["updated_at"] = self.now
        for key in ("status", "kind"):
            if key in fields and fields[key] is not None:
                fields[key] = str(fields[key])
        self._message_updates.setdefault(message_id, {}).update(fields)
        if message_id in self._rows:
            self._changes.setdefault(message_id, {}).update(fields)

    def update_delivery(self, delivery_id: int, **fields: object) -> None:
        fields["updated_at"] = self.now
        if "status" in fields:
            fields["status"] = str(fields["status"])
        self._delivery_updates.setdefault(delivery_id, {}).update(fields)

    def event(
        self,
        message_id: int,
        stage: str,
        status: Status | DeliveryStatus | None,
        *,
        detail: str | None = None,
        reason_code: str | None = None,
        delivery_id: int | None = None,
        actor: str | None = None,
    ) -> None:
        self._events.append(
            {
                "message_id": message_id,
                "delivery_id": delivery_id,
                "at": self.now,
                "stage": stage,
                "status": None if status is None else str(status),
                "actor": actor or self.actor,
                "reason_code": reason_code,
                "detail": detail,
            }
        )

    def put_blob(
        self,
        message_id: int,
        kind: str,
        data: bytes,
        *,
        delivery_id: int = 0,
        replace: bool = False,
        digest: str | None = None,
        encrypt: bool = True,
    ) -> None:
        """Store content encrypted at rest; ``replace`` an earlier blob of the same place.
        ``digest`` is the SHA-256 (hex) of ``data`` if the caller has it already.
        ``encrypt=False`` only for data that is already ciphertext: an envelope sealed for its
        recipient (stored :data:`AS_SEALED`, see the module docstring)."""
        if encrypt:
            sealed = self._keys.encrypt(data, blob_associated_data(message_id, kind, delivery_id))
            key_id, nonce, stored = sealed.key_id, sealed.nonce, sealed.data
        else:
            key_id, nonce, stored = AS_SEALED, b"", data
        row = {
            "message_id": message_id,
            "delivery_id": delivery_id,
            "kind": kind,
            "key_id": key_id,
            "nonce": nonce,
            "data": stored,
            "size": len(data),
            "digest": digest or hashlib.sha256(data).hexdigest(),
        }
        (self._blob_replaced if replace else self._blobs).append(row)
        self._written[(message_id, kind, delivery_id)] = data

    def blob_writer(
        self,
        message_id: int,
        kind: str,
        *,
        delivery_id: int = 0,
        replace: bool = False,
        encrypt: bool = True,
    ) -> BlobWriter:
        """A writable binary stream into a blob (use it as a context manager: an exception
        inside removes what was written). Small content ends as :meth:`put_blob` stores it;
        above :data:`~kcbus.ledger._chunks.INLINE_MAX` it is stored in chunks as it comes.
        ``writer.size`` and ``writer.digest`` (SHA-256 hex) are set when it is closed."""

        def inline(data: bytes, digest: str) -> None:
            self.put_blob(
                message_id,
                kind,
                data,
                delivery_id=delivery_id,
                replace=replace,
                digest=digest,
                encrypt=encrypt,
            )

        place = (message_id, kind, delivery_id)
        self._written.pop(place, None)
        if replace:
            # A pending inline row for this place would be flushed over the chunked one.
            self._blob_replaced = [r for r in self._blob_replaced if _place(r) != place]
            self._blobs = [r for r in self._blobs if _place(r) != place]
        return BlobWriter(
            self._conn,
            self._keys,
            (message_id, kind, delivery_id),
            encrypt=encrypt,
            replace=replace,
            inline=inline,
        )

    def put_blob_stream(
        self,
        message_id: int,
        kind: str,
        source: BinaryIO | Path,
        *,
        delivery_id: int = 0,
        replace: bool = False,
        encrypt: bool = True,
    ) -> tuple[int, str]:
        """:meth:`put_blob` from a binary stream (read from where it stands to its end) or a
        file, in chunks; returns (size, SHA-256 hex)."""
        with self.blob_writer(
            message_id, kind, delivery_id=delivery_id, replace=replace, encrypt=encrypt
        ) as out:
            if isinstance(source, Path):
                with open(source, "rb") as src:
                    _copy(src, out)
            else:
                _copy(source, out)
        return out.size, out.digest

    # -- reads ------------------------------------------------------------------------------

    def open_blob(self, message_id: int, kind: str, *, delivery_id: int = 0) -> BinaryIO:
        """A blob as a readable, seekable binary stream (chunked blobs are read a chunk at a
        time, within this unit)."""
        found = self.blob_sources(kind, [message_id], delivery_id=delivery_id).get(message_id)
        if found is None:
            raise LedgerError(f"message {message_id} has no {kind} blob")
        if isinstance(found, StoredBlob):
            return found.open()
        return io.BytesIO(found)

    def blobs(
        self, kind: str, message_ids: Iterable[int], *, delivery_id: int | None = 0
    ) -> dict[int, bytes]:
        """Decrypted blobs of ``kind`` by message ID (``delivery_id=None``: by delivery ID).
        Chunked blobs are read whole: for large content use :meth:`blob_sources`."""
        return {
            key: value.read() if isinstance(value, StoredBlob) else value
            for key, value in self.blob_sources(kind, message_ids, delivery_id=delivery_id).items()
        }

    def blob_sources(
        self, kind: str, message_ids: Iterable[int], *, delivery_id: int | None = 0
    ) -> dict[int, BlobSource]:
        """As :meth:`blobs`, but a chunked blob comes as a :class:`StoredBlob` to stream."""
        out: dict[int, BlobSource] = {}
        ids = []
        for message_id in message_ids:
            if delivery_id is not None and (message_id, kind, delivery_id) in self._written:
                out[message_id] = self._written[(message_id, kind, delivery_id)]
            else:
                ids.append(message_id)
        if delivery_id is None:
            wanted = set(ids)
            for (message_id, written_kind, written_delivery), data in self._written.items():
                if written_kind == kind and written_delivery and message_id in wanted:
                    out[written_delivery] = data
        if not ids:
            return out
        self.flush()
        query = select(blobs).where(blobs.c.kind == kind, blobs.c.message_id.in_(ids))
        if delivery_id is not None:
            query = query.where(blobs.c.delivery_id == delivery_id)
        for r in self._conn.execute(query).all():
            if delivery_id is None and int(r.delivery_id) in out:
                continue
            key = r.message_id if delivery_id is not None else r.delivery_id
            if r.chunks:
                out[int(key)] = self._stored(r)
                continue
            if r.key_id == AS_SEALED:
                out[int(key)] = bytes(r.data)
                continue
            out[int(key)] = self._keys.decrypt(
                r.key_id, r.nonce, r.data, blob_associated_data(r.message_id, kind, r.delivery_id)
            )
        return out

    def _stored(self, r: Any) -> StoredBlob:
        blob = ChunkedBlob.from_row(r)

        def opener() -> BinaryIO:
            return open_chunked(self._conn, self._keys, blob)

        return StoredBlob(*blob.place, size=blob.size, digest=blob.digest, _opener=opener)

    def opened_envelope_ids(self, envelope_ids: Iterable[str], exclude: Iterable[int]) -> set[str]:
        """Which of these envelope IDs another message already opened (replay protection)."""
        ids = [e for e in envelope_ids if e]
        if not ids:
            return set()
        query = select(messages.c.envelope_id).where(
            messages.c.envelope_id.in_(ids),
            messages.c.uuid.is_not(None),
            messages.c.kind == str(Kind.MESSAGE),
            messages.c.id.not_in(list(exclude)),
        )
        return {str(r[0]) for r in self._conn.execute(query).all()}

    def deliveries_of(self, message_ids: Iterable[int]) -> dict[int, list[DeliveryRow]]:
        self.flush()
        ids = list(message_ids)
        out: dict[int, list[DeliveryRow]] = defaultdict(list)
        if not ids:
            return out
        query = select(deliveries).where(deliveries.c.message_id.in_(ids)).order_by(deliveries.c.id)
        for r in self._conn.execute(query).mappings():
            out[int(r["message_id"])].append(DeliveryRow.from_mapping(r))
        return out

    def messages_by_id(self, message_ids: Iterable[int]) -> dict[int, MessageRow]:
        self.flush()
        ids = list(message_ids)
        if not ids:
            return {}
        rows = self._conn.execute(select(messages).where(messages.c.id.in_(ids))).mappings()
        return {int(r["id"]): MessageRow.from_mapping(r) for r in rows}

    def statuses(self, message_ids: Iterable[int]) -> dict[int, Status]:
        """Current status by message ID (a light read: no full rows)."""
        self.flush()
        ids = list(message_ids)
        if not ids:
            return {}
        query = select(messages.c.id, messages.c.status).where(messages.c.id.in_(ids))
        return {int(r.id): Status(r.status) for r in self._conn.execute(query).all()}

    def children(self, parent_ids: Iterable[int]) -> list[MessageRow]:
        self.flush()
        ids = list(parent_ids)
        if not ids:
            return []
        rows = self._conn.execute(select(messages).where(messages.c.parent_id.in_(ids))).mappings()
        return [MessageRow.from_mapping(r) for r in rows]

    def receipt_statuses(
        self, parent_ids: Iterable[int], receipt_type: str
    ) -> dict[int, list[Status]]:
        """The statuses of the receipts of ``receipt_type`` already written about each parent
        (parents without one are absent): one light, indexed read for a whole batch."""
        self.flush()
        ids = list(parent_ids)
        if not ids:
            return {}
        query = select(messages.c.parent_id, messages.c.status).where(
            messages.c.parent_id.in_(ids), messages.c.receipt_type == receipt_type
        )
        out: dict[int, list[Status]] = defaultdict(list)
        for r in self._conn.execute(query).all():
            out[int(r.parent_id)].append(Status(r.status))
        return out

    def advance_where(
        self, message_ids: Iterable[int], *, from_status: Status, to_status: Status
    ) -> set[int]:
        """Set ``to_status`` on those of ``message_ids`` whose status is ``from_status`` at
        this moment, in one conditional UPDATE; gives the IDs it changed. Unlike a read and
        then :meth:`update`, it cannot miss a row another worker is moving: PostgreSQL waits
        for that worker's commit and checks the condition again on the committed row."""
        self.flush()
        ids = list(message_ids)
        if not ids:
            return set()
        statement = (
            update(messages)
            .where(messages.c.id.in_(ids), messages.c.status == str(from_status))
            .values(status=str(to_status), updated_at=self.now)
            .returning(messages.c.id)
        )
        changed = {int(r[0]) for r in self._conn.execute(statement).all()}
        for message_id in changed & self._rows.keys():
            self._changes.setdefault(message_id, {}).update(
                status=str(to_status), updated_at=self.now
            )
        return changed

    # -- flush ------------------------------------------------------------------------------

    def flush(self) -> None:
        if self._blob_replaced:
            upsert = _upsert_blob_postgres if self._postgres else _upsert_blob_sqlite
            self._many(("upsert", "blobs"), upsert, self._blob_replaced)
            # An inline blob that replaced a chunked one (chunks is 0 now) leaves no chunks.
            places = [
                {"m": r["message_id"], "k": r["kind"], "d": r["delivery_id"]}
                for r in self._blob_replaced
            ]
            self._many(("delete", "replaced-chunks"), _orphan_chunks, places)
            self._blob_replaced = []
        if self._blobs:
            self._many(("insert", "blobs"), lambda: insert(blobs), self._blobs)
            self._blobs = []
        for table, pending in (
            (messages, self._message_updates),
            (deliveries, self._delivery_updates),
        ):
            by_shape: dict[tuple[str, ...], list[dict[str, object]]] = defaultdict(list)
            for row_id, fields in pending.items():
                by_shape[tuple(sorted(fields))].append({"_id": row_id, **fields})
            for shape, rows in by_shape.items():
                self._many(("update", table.name, *shape), _updater(table, shape), rows)
            pending.clear()
        if self._events:
            self._many(("insert", "events"), lambda: insert(events), self._events)
            self._events = []

    def _many(
        self,
        key: tuple[str, ...],
        build: Callable[[], UpdateBase],
        rows: list[dict[str, object]],
    ) -> None:
        """``executemany`` of ``build()`` over ``rows`` (all with the same keys).

        On SQLite the statement is compiled once per process and shape and the rows go to the
        driver as tuples, each value through its column type's bind processor (the same
        conversion SQLAlchemy applies); SQLAlchemy's own executemany costs ~3x the driver's
        time per row, and the bus writes ~20 event rows, ~8 blobs and ~13 updates per message.
        Elsewhere (PostgreSQL: psycopg's pipelined executemany) SQLAlchemy executes it.
        """
        if self._postgres:
            self._conn.execute(build(), rows)
            return
        dialect = self._conn.dialect
        entry = _COMPILED.get(key)
        if entry is None:
            compiled = build().compile(dialect=dialect, column_keys=list(rows[0]))
            names = tuple(compiled.positiontup or ())
            if not names or not set(names) <= set(rows[0]):
                self._conn.execute(build(), rows)  # a shape this shortcut does not cover
                return
            # dialect_impl: SQLite's own DATETIME format (always with microseconds, as every
            # other statement binds it), not the driver's default adapter.
            processors = tuple(
                compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
            )
            entry = _Compiled(compiled.string, names, processors)
            _COMPILED[key] = entry
        self._conn.exec_driver_sql(entry.sql, entry.params(rows))


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def params(self, rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
        # The values in column order at C speed (itemgetter), then only the columns with a
        # bind processor are converted, None only if its processor makes something else of
        # it (none of the ledger's types does; JSON would). A unit stamps nearly every row
        # with the same time (its ``now``): each distinct datetime is converted once per
        # call, not once per row.
        get = itemgetter(*self.names)
        one = len(self.names) == 1
        convert = [(i, p, p(None)) for i, p in enumerate(self.processors) if p is not None]
        done: dict[tuple[int, object], object] = {}
        out = []
        for row in rows:
            values = [get(row)] if one else list(get(row))
            for i, p, null in convert:
                value = values[i]
                if value is None:
                    values[i] = null
                    continue
                if isinstance(value, datetime):
                    key = (i, value)
                    if key not in done:
                        done[key] = p(value)
                    values[i] = done[key]
                else:
                    values[i] = p(value)
            out.append(tuple(values))
        return out


#: Message columns a row dict for ``insert(messages)`` may leave out (``MessageRow`` needs all).
_UNSET: dict[str, object] = {
    "envelope_id": None,
    "envelope_digest": None,
    "next_attempt_at": None,
    "reason_code": None,
    "reason": None,
    "source": None,
    "peer": None,
    "resolved_at": None,
    "resolved_by": None,
}
_ROW_FIELDS = frozenset(MessageRow.__dataclass_fields__)

#: Compiled SQLite statements by shape (see :meth:`Unit._many`); shapes are few and fixed.
_COMPILED: dict[tuple[str, ...], _Compiled] = {}


def _upsert(dialect_insert: Callable[[Table], Any]) -> UpdateBase:
    """INSERT a blob, or overwrite the one at its (message, kind, delivery) place."""
    stmt = dialect_insert(blobs)
    # ``salt`` too: the row is inline now (NULL), whatever stood at the place before.
    replaced = ("key_id", "nonce", "data", "size", "digest", "chunks", "salt")
    result: UpdateBase = stmt.on_conflict_do_update(
        index_elements=["message_id", "kind", "delivery_id"],
        set_={name: stmt.excluded[name] for name in replaced},
    )
    return result


def _place(row: dict[str, object]) -> tuple[object, object, object]:
    return row["message_id"], row["kind"], row["delivery_id"]


def _orphan_chunks() -> UpdateBase:
    """Chunks of the blob at a place whose row is inline now (``chunks`` = 0)."""
    blob = (
        select(blobs.c.id)
        .where(
            blobs.c.message_id == bindparam("m"),
            blobs.c.kind == bindparam("k"),
            blobs.c.delivery_id == bindparam("d"),
            blobs.c.chunks == 0,
        )
        .scalar_subquery()
    )
    return delete(blob_chunks).where(blob_chunks.c.blob_id == blob)


def _upsert_blob_sqlite() -> UpdateBase:
    return _upsert(sqlite.insert)


def _upsert_blob_postgres() -> UpdateBase:
    return _upsert(postgresql.insert)


def _updater(table: Table, shape: tuple[str, ...]) -> Callable[[], UpdateBase]:
    def build() -> UpdateBase:
        return (
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values({col: bindparam(col) for col in shape})
        )

    return build


def _copy(src: BinaryIO, out: BlobWriter) -> None:
    while block := src.read(CHUNK):
        out.write(block)


def _measure(item: NewEnvelope) -> tuple[str, int]:
    """SHA-256 (hex) and size of an envelope; a stream is read in chunks and rewound."""
    if item.data is not None:
        return hashlib.sha256(item.data).hexdigest(), len(item.data)
    assert item.stream is not None
    digest = hashlib.sha256()
    size = 0
    if isinstance(item.stream, Path):
        with open(item.stream, "rb") as src:
            while block := src.read(CHUNK):
                digest.update(block)
                size += len(block)
        return digest.hexdigest(), size
    start = item.stream.tell()
    while block := item.stream.read(CHUNK):
        digest.update(block)
        size += len(block)
    item.stream.seek(start)
    return digest.hexdigest(), size


def _via(item: NewEnvelope, size: int) -> str:
    parts = []
    if item.source:
        parts.append(f"via {item.source}")
    if item.envelope_id:
        parts.append(f"envelope {item.envelope_id}")
    if item.peer:
        parts.append(f"peer {item.peer}")
    parts.append(f"{size} bytes")
    return ", ".join(parts)
