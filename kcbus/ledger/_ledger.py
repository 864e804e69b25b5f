"""The ledger: kcbus's message store and the operator's source of truth.

``Ledger(url)`` opens (and migrates) the database. Three faces:

- **query** (CLI, operator UI): :meth:`Ledger.search`, :meth:`Ledger.count`, :meth:`Ledger.get`,
  :meth:`Ledger.history`, :meth:`Ledger.counts`, :meth:`Ledger.routes`,
  :meth:`Ledger.went_dead`; rows carry no content.
- **operator actions**, each recorded as an event with actor and reason: :meth:`Ledger.resend`,
  :meth:`Ledger.mark_resolved`, :meth:`Ledger.content` (refused for end-to-end routes; every
  read of content is itself an event).
- **work** (pipeline): :meth:`Ledger.unit` — one transaction per stage and batch.

Maintenance: :meth:`backup`, :meth:`restore` (see :mod:`kcbus.ledger._backup`), :meth:`prune`,
:meth:`reencrypt`. Connection errors surface as :class:`~kcbus._errors.LedgerUnavailable`.

Actors longer than the columns hold are clipped by :func:`~kcbus.ledger.clip_actor` at every
entry (units, operator actions, audit rows, the ``actor`` filter), so the same actor is always
stored and found as the same string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from kcbus._errors import LedgerError, LedgerUnavailable, NotFound
from kcbus.ledger._chunks import ChunkedBlob, open_chunked, reencrypt_chunked
from kcbus.ledger._content import ContentKeyring
from kcbus.ledger._engine import WRITE, make_engine, sqlite_path
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
from kcbus.ledger._status import SETTLED, DeliveryStatus, Status
from kcbus.ledger._tables import (
    HEAD_REVISION,
    audit,
    blob_chunks,
    blobs,
    deliveries,
    events,
    message_keys,
    messages,
)
from kcbus.ledger._unit import AS_SEALED, Unit, blob_associated_data

__all__ = ["DEFAULT_URL", "Ledger", "default_url"]

#: Inline blob bytes re-encrypted per transaction (:meth:`Ledger.reencrypt`).
_REENCRYPT_BYTES = 64 << 20

#: The embedded default, relative to the working directory (``var/`` is git-ignored).
DEFAULT_URL = "sqlite:///var/ledger.sqlite"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: Statuses from which a resend makes sense (the message had, or should have, deliveries).
_RESENDABLE = frozenset(
    {Status.ROUTED, Status.DELIVERED, Status.ACKNOWLEDGED, Status.RETRYING, Status.DEAD}
)


def default_url() -> str:
    """``KCBUS_LEDGER`` if set, else the embedded SQLite file under ``var/``."""
    return os.environ.get("KCBUS_LEDGER") or DEFAULT_URL


class Ledger:
    """The message store. Thread-compatible; one instance per process is enough."""

    def __init__(
        self,
        url: str | None = None,
        *,
        keys: ContentKeyring | Path | None = None,
        migrate: bool = True,
        echo: bool = False,
    ) -> None:
        self.url = url or default_url()
        self._engine = make_engine(self.url, echo=echo)
        self.dialect = self._engine.dialect.name
        self.keys = self._keyring(keys)
        if migrate:
            self.migrate()

    def _keyring(self, keys: ContentKeyring | Path | None) -> ContentKeyring:
        if isinstance(keys, ContentKeyring):
            return keys
        if isinstance(keys, Path):
            return ContentKeyring.open(keys)
        env = os.environ.get("KCBUS_LEDGER_KEYS")
        if env:
            return ContentKeyring.open(Path(env))
        db = sqlite_path(self.url)
        if db is not None:  # embedded default: the key file beside the database file
            return ContentKeyring.open(db.with_name(db.name + ".keys"))
        if self.dialect == "sqlite":  # in-memory: keys live as long as the data
            return ContentKeyring.generate()
        raise LedgerError(
            "no ledger content key file: set KCBUS_LEDGER_KEYS to a path (created if missing)"
        )

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        safe = self._engine.url.render_as_string(hide_password=True)
        return f"Ledger({safe!r})"

    # -- connections ------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            raise LedgerUnavailable(
                f"ledger database unavailable ({type(exc.orig).__name__})"
            ) from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                conn = conn.execution_options(**{WRITE: True})
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise LedgerUnavailable(
                f"ledger database unavailable ({type(exc.orig).__name__})"
            ) from exc

    @contextmanager
    def unit(self, *, actor: str, now: datetime) -> Iterator[Unit]:
        """One write transaction for a stage's batch; commits on normal exit."""
        with self._write() as conn:
            work = Unit(conn, self.keys, actor=clip_actor(actor), now=now)
            yield work
            work.flush()

    # -- schema -----------------------------------------------------------------------------

    def revision(self) -> str | None:
        with self._read() as conn:
            try:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            except SQLAlchemyError:
                return None
        return None if row is None else str(row[0])

    def migrate(self) -> None:
        """Bring the schema to this code's revision (Alembic); no-op when already there."""
        if self._current_revision() == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._write() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def _current_revision(self) -> str | None:
        try:
            with self._engine.connect() as conn:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except OperationalError:
            return None
        except SQLAlchemyError:
            return None
        return None if row is None else str(row[0])

    # -- query ------------------------------------------------------------------------------

    def _where(self, flt: MessageFilter) -> list[ColumnElement[bool]]:
        m = messages
        clauses: list[ColumnElement[bool]] = []
        if flt.uuid:
            clauses.append(m.c.uuid == _message_id(flt.uuid))
        if flt.ledger_ids:
            clauses.append(m.c.id.in_(flt.ledger_ids))
        if flt.status:
            clauses.append(m.c.status.in_([str(s) for s in flt.status]))
        if flt.kind is not None:
            clauses.append(m.c.kind == str(flt.kind))
        if flt.route:
            clauses.append(m.c.route == flt.route)
        if flt.sender:
            clauses.append(m.c.sender == flt.sender)
        to_partner = (
            exists()
            .where(deliveries.c.message_id == m.c.id)
            .where(deliveries.c.destination == literal(flt.recipient or flt.partner))
        )
        if flt.recipient:
            clauses.append(to_partner)
        if flt.partner:
            clauses.append(or_(m.c.sender == flt.partner, to_partner))
        if flt.message_type:
            if "*" in flt.message_type or "?" in flt.message_type:
                pattern = flt.message_type.replace("%", r"\%").replace("_", r"\_")
                pattern = pattern.replace("*", "%").replace("?", "_")
                clauses.append(m.c.message_type.like(pattern, escape="\\"))
            else:
                clauses.append(m.c.message_type == flt.message_type)
        if flt.since is not None:
            clauses.append(m.c.received_at >= flt.since)
        if flt.until is not None:
            clauses.append(m.c.received_at < flt.until)
        if flt.resolved is True:
            clauses.append(m.c.resolved_at.is_not(None))
        elif flt.resolved is False:
            clauses.append(m.c.resolved_at.is_(None))
        if flt.actor:
            # IN (uncorrelated): the planner reads ix_events_actor_message_id once and fetches
            # the few messages by primary key, instead of probing events for every message.
            touched = select(events.c.message_id).where(events.c.actor == clip_actor(flt.actor))
            clauses.append(m.c.id.in_(touched))
        return clauses

    def search(
        self,
        flt: MessageFilter | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[MessageRow]:
        query: Select[tuple[object, ...]] = select(messages).where(
            *self._where(flt or MessageFilter())
        )
        order = messages.c.id.desc() if newest_first else messages.c.id
        query = query.order_by(order).limit(limit).offset(offset)
        with self._read() as conn:
            return [MessageRow.from_mapping(r) for r in conn.execute(query).mappings()]

    def count(self, flt: MessageFilter | None = None, *, cap: int | None = None) -> int:
        """How many messages match; with ``cap``, counting stops there (fast on huge ledgers)."""
        inner = select(messages.c.id).where(*self._where(flt or MessageFilter()))
        if cap is not None:
            inner = inner.limit(cap)
        query = select(func.count()).select_from(inner.subquery())
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def get(self, ref: str | int) -> MessageRow:
        """A message by reference; :class:`NotFound` if there is none.

        ``ref`` is, in this order: an ``int`` or ``#<ledger id>`` (the ledger ID, nothing
        else); a message ID — a UUID (any case) or any other ID a standard uses (a CDA
        ``root^extension``, an XJustiz ID, even one of digits only), the first message with it
        (later duplicates are reached by ledger ID); a string of digits that is no message ID,
        as a ledger ID; else an envelope ID.
        """
        with self._read() as conn:
            return self._get(conn, ref)

    def _get(self, conn: Connection, ref: str | int) -> MessageRow:
        if isinstance(ref, int):
            return self._first(conn, messages.c.id == ref, ref)
        if ref.startswith("#") and ref[1:].isdigit():
            return self._first(conn, messages.c.id == int(ref[1:]), ref)
        # Separate lookups, each on its own index (an OR over two columns is a table scan).
        key = _message_id(ref)
        row = (
            conn.execute(
                select(messages).where(messages.c.uuid == key).order_by(messages.c.id).limit(1)
            )
            .mappings()
            .first()
        )
        if row is not None:
            return MessageRow.from_mapping(row)
        if ref.isdigit():
            return self._first(conn, messages.c.id == int(ref), ref)
        return self._first(conn, messages.c.envelope_id == key, ref)

    @staticmethod
    def _first(conn: Connection, where: ColumnElement[bool], ref: str | int) -> MessageRow:
        query = select(messages).where(where).order_by(messages.c.id).limit(1)
        row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFound(str(ref))
        return MessageRow.from_mapping(row)

    def routes(self) -> list[str]:
        """The routes (flows) that messages in the ledger belong to, sorted."""
        query = (
            select(messages.c.route)
            .where(messages.c.route.is_not(None))
            .distinct()
            .order_by(messages.c.route)
        )
        with self._read() as conn:
            return [str(r[0]) for r in conn.execute(query).all()]

    def went_dead(
        self,
        *,
        since: datetime,
        until: datetime,
        flt: MessageFilter | None = None,
        limit: int = 10_000,
    ) -> list[MessageRow]:
        """Messages that went DEAD between ``since`` and ``until`` (both included), oldest first.

        "Went DEAD" means an event recorded DEAD for the message or one of its deliveries in
        the window (a seal failure marks the delivery's event only). The message may have
        moved on since (re-sent, resolved): narrow with ``flt`` (e.g. ``status=(DEAD,)``,
        ``resolved=False``) for "still DEAD now". Both ends are included so that a transition
        exactly on the border of two adjacent windows is reported by both, never by neither.
        """
        dead = str(Status.DEAD)
        # EXISTS per candidate message over ix_events_message_id_id: the candidates come from
        # the filter's own index (status, route), and DEAD messages are few.
        went = (
            exists()
            .where(events.c.message_id == messages.c.id)
            .where(events.c.status == dead, events.c.at >= since, events.c.at <= until)
        )
        query = (
            select(messages)
            .where(*self._where(flt or MessageFilter()), went)
            .order_by(messages.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [MessageRow.from_mapping(r) for r in conn.execute(query).mappings()]

    def history(self, ref: str | int) -> History:
        with self._read() as conn:
            message = self._get(conn, ref)
            event_rows = conn.execute(
                select(events).where(events.c.message_id == message.ledger_id).order_by(events.c.id)
            ).all()
            delivery_rows = conn.execute(
                select(deliveries)
                .where(deliveries.c.message_id == message.ledger_id)
                .order_by(deliveries.c.id)
            ).mappings()
            receipt_rows = conn.execute(
                select(messages)
                .where(messages.c.parent_id == message.ledger_id)
                .order_by(messages.c.id)
            ).mappings()
            has_content = (
                conn.execute(
                    select(blobs.c.id).where(
                        blobs.c.message_id == message.ledger_id, blobs.c.kind == "content"
                    )
                ).first()
                is not None
            )
            return History(
                message=message,
                events=tuple(
                    EventRow(
                        id=r.id,
                        message_id=r.message_id,
                        delivery_id=r.delivery_id,
                        at=r.at,
                        stage=r.stage,
                        status=r.status,
                        actor=r.actor,
                        reason_code=r.reason_code,
                        detail=r.detail,
                    )
                    for r in event_rows
                ),
                deliveries=tuple(DeliveryRow.from_mapping(r) for r in delivery_rows),
                receipts=tuple(MessageRow.from_mapping(r) for r in receipt_rows),
                content_available=has_content and not message.end_to_end,
            )

    def counts(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        group_by: GroupBy = "status",
        flt: MessageFilter | None = None,
    ) -> list[CountRow]:
        """Messages received per time bucket and ``group_by`` value, in SQL (fast at 100k+)."""
        width = int(bucket.total_seconds())
        if width < 1:
            raise ValueError("bucket must be at least one second")
        origin = int(since.timestamp())
        epoch = self._epoch(messages.c.received_at)
        index = (
            cast((epoch - origin) / width, Integer)
            if self.dialect == "sqlite"
            else func.floor((epoch - origin) / width)
        )
        key_column = {
            "status": messages.c.status,
            "route": messages.c.route,
            "sender": messages.c.sender,
            "recipient": messages.c.recipient,
            "message_type": messages.c.message_type,
        }[group_by]
        query = (
            select(index.label("i"), key_column.label("k"), func.count().label("n"))
            .where(*self._where(flt or MessageFilter()))
            .where(messages.c.received_at >= since, messages.c.received_at < until)
            .group_by(index, key_column)
            .order_by(index)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            CountRow(
                bucket=datetime.fromtimestamp(origin + int(r.i) * width, tz=UTC),
                key=str(r.k) if r.k is not None else "",
                count=int(r.n),
            )
            for r in rows
        ]

    def _epoch(self, column: ColumnElement[datetime]) -> ColumnElement[int]:
        if self.dialect == "sqlite":
            return cast(func.strftime("%s", column), Integer)
        return func.extract("epoch", column)

    def content(self, ref: str | int, *, actor: str, reason: str, now: datetime) -> bytes:
        """The readable content of a full-inspection message; the read is recorded as an event.

        Refused (:class:`LedgerError`) for end-to-end routes: the bus never held their content.
        """
        actor = clip_actor(actor)
        with self._write() as conn:
            message = self._get(conn, ref)
            if message.end_to_end:
                raise LedgerError(f"message {message.ref} is end-to-end: the bus has no content")
            row = conn.execute(
                select(blobs).where(
                    blobs.c.message_id == message.ledger_id,
                    blobs.c.kind == "content",
                    blobs.c.delivery_id == 0,
                )
            ).first()
            if row is None:
                raise LedgerError(f"message {message.ref} has no readable content in the ledger")
            if row.chunks:  # the operator asked for it whole
                with open_chunked(conn, self.keys, ChunkedBlob.from_row(row)) as src:
                    data = src.read()
            else:
                data = self.keys.decrypt(
                    row.key_id,
                    row.nonce,
                    row.data,
                    blob_associated_data(message.ledger_id, "content", 0),
                )
            conn.execute(
                insert(events).values(
                    message_id=message.ledger_id,
                    at=now,
                    stage="content-viewed",
                    status=None,
                    actor=actor,
                    detail=_clip(reason),
                )
            )
            return data

    # -- operator actions -------------------------------------------------------------------

    def resend(
        self,
        refs: Sequence[str | int] = (),
        *,
        flt: MessageFilter | None = None,
        actor: str,
        reason: str,
        now: datetime,
        max_messages: int = 10_000,
    ) -> ActionOutcome:
        """Deliver messages again: named ones, or all matching ``flt``.

        Deliveries go back to PENDING and are sealed afresh (a new envelope ID, the same
        message UUID, as XÖV allows for a resend); the message returns to ROUTED. Messages that
        never got that far (REJECTED, DUPLICATE, still in the pipeline) are skipped with why.
        """
        actor = clip_actor(actor)
        acted: list[MessageRow] = []
        skipped: list[tuple[str, str]] = []
        with self._write() as conn:
            targets = self._targets(conn, refs, flt, max_messages, skipped)
            for message in targets:
                if message.status not in _RESENDABLE:
                    skipped.append((message.ref, f"status {message.status} cannot be re-sent"))
                    continue
                count = conn.execute(
                    update(deliveries)
                    .where(deliveries.c.message_id == message.ledger_id)
                    .values(
                        status=str(DeliveryStatus.PENDING),
                        attempts=0,
                        next_attempt_at=None,
                        last_error_code=None,
                        last_error=None,
                        updated_at=now,
                    )
                ).rowcount
                if not count:
                    skipped.append((message.ref, "has no destinations to re-send to"))
                    continue
                conn.execute(
                    update(messages)
                    .where(messages.c.id == message.ledger_id)
                    .values(
                        status=str(Status.ROUTED),
                        attempts=0,
                        next_attempt_at=None,
                        resolved_at=None,
                        resolved_by=None,
                        updated_at=now,
                    )
                )
                conn.execute(
                    insert(events).values(
                        message_id=message.ledger_id,
                        at=now,
                        stage="resend",
                        status=str(Status.ROUTED),
                        actor=actor,
                        detail=_clip(reason),
                    )
                )
                acted.append(message)
        return ActionOutcome("resend", actor, reason, tuple(acted), tuple(skipped))

    def mark_resolved(
        self,
        refs: Sequence[str | int] = (),
        *,
        flt: MessageFilter | None = None,
        actor: str,
        reason: str,
        now: datetime,
        max_messages: int = 10_000,
    ) -> ActionOutcome:
        """Record that an operator dealt with failed messages (they leave the failure list)."""
        actor = clip_actor(actor)
        acted: list[MessageRow] = []
        skipped: list[tuple[str, str]] = []
        with self._write() as conn:
            for message in self._targets(conn, refs, flt, max_messages, skipped):
                if message.resolved:
                    skipped.append((message.ref, "already resolved"))
                    continue
                conn.execute(
                    update(messages)
                    .where(messages.c.id == message.ledger_id)
                    .values(resolved_at=now, resolved_by=actor, updated_at=now)
                )
                conn.execute(
                    insert(events).values(
                        message_id=message.ledger_id,
                        at=now,
                        stage="resolve",
                        status=str(message.status),
                        actor=actor,
                        detail=_clip(reason),
                    )
                )
                acted.append(message)
        return ActionOutcome("resolve", actor, reason, tuple(acted), tuple(skipped))

    def _targets(
        self,
        conn: Connection,
        refs: Sequence[str | int],
        flt: MessageFilter | None,
        max_messages: int,
        skipped: list[tuple[str, str]],
    ) -> list[MessageRow]:
        if not reason_given(refs, flt):
            raise LedgerError("name messages or give a filter")
        found: list[MessageRow] = []
        for ref in refs:
            try:
                found.append(self._get(conn, ref))
            except NotFound:
                skipped.append((str(ref), "not in the ledger"))
        if flt is not None:
            query = (
                select(messages)
                .where(*self._where(flt))
                .order_by(messages.c.id)
                .limit(max_messages + 1)
            )
            rows = [MessageRow.from_mapping(r) for r in conn.execute(query).mappings()]
            if len(rows) > max_messages:
                raise LedgerError(f"more than {max_messages} messages match: narrow the filter")
            found.extend(rows)
        unique: dict[int, MessageRow] = {m.ledger_id: m for m in found}
        # Lock them (PostgreSQL) so a worker does not deliver one while we reset it.
        if unique:
            conn.execute(
                select(messages.c.id).where(messages.c.id.in_(list(unique))).with_for_update()
            ).all()
        return list(unique.values())

    # -- maintenance ------------------------------------------------------------------------

    def record(self, action: str, *, actor: str, detail: str, now: datetime) -> None:
        """Write an ``audit`` row for an operator action over the whole ledger."""
        with self._write() as conn:
            conn.execute(
                insert(audit).values(
                    at=now, actor=clip_actor(actor), action=action, detail=_clip(detail)
                )
            )

    def prune(
        self,
        *,
        now: datetime,
        retention: Callable[[str | None], timedelta | None],
        actor: str,
        batch: int = 1000,
    ) -> int:
        """Delete settled messages older than their route's retention (with events and blobs).

        ``retention(route)`` gives the period per route (``None``: keep forever). A receipt
        goes with its message. Resolved DEAD messages count as settled.
        """
        removed = 0
        settled = [str(s) for s in SETTLED]
        with self._write() as conn:
            routes = [
                r[0]
                for r in conn.execute(
                    select(messages.c.route).where(messages.c.parent_id.is_(None)).distinct()
                ).all()
            ]
            for route in routes:
                period = retention(route)
                if period is None:
                    continue
                cutoff = now - period
                route_clause = (
                    messages.c.route.is_(None) if route is None else messages.c.route == route
                )
                candidates = select(messages.c.id).where(
                    route_clause,
                    messages.c.parent_id.is_(None),
                    messages.c.updated_at < cutoff,
                    or_(
                        messages.c.status.in_(settled),
                        and_(
                            messages.c.status == str(Status.DEAD),
                            messages.c.resolved_at.is_not(None),
                        ),
                    ),
                )
                while True:
                    ids = [r[0] for r in conn.execute(candidates.limit(batch)).all()]
                    if not ids:
                        break
                    children = [
                        r[0]
                        for r in conn.execute(
                            select(messages.c.id).where(messages.c.parent_id.in_(ids))
                        ).all()
                    ]
                    every = ids + children
                    conn.execute(
                        delete(blob_chunks).where(
                            blob_chunks.c.blob_id.in_(
                                select(blobs.c.id).where(blobs.c.message_id.in_(every))
                            )
                        )
                    )
                    for table in (blobs, events, deliveries, message_keys):
                        conn.execute(delete(table).where(table.c.message_id.in_(every)))
                    conn.execute(delete(messages).where(messages.c.id.in_(children)))
                    conn.execute(delete(messages).where(messages.c.id.in_(ids)))
                    removed += len(ids)
            conn.execute(
                insert(audit).values(
                    at=now,
                    actor=clip_actor(actor),
                    action="prune",
                    detail=f"{removed} messages removed",
                )
            )
        return removed

    def reencrypt(self, *, actor: str, now: datetime, batch: int = 500) -> int:
        """Re-encrypt every blob not under the active key (after :meth:`ContentKeyring.rotate`).
        Envelopes stored as sealed for their recipient (:data:`AS_SEALED`) name no ledger key
        and stay as they are."""
        active = self.keys.active
        moved = 0
        while True:
            with self._write() as conn:
                # One transaction holds at most _REENCRYPT_BYTES of inline blobs, or one
                # chunked blob (hundreds of MB): memory and the write lock stay bounded.
                heads = conn.execute(
                    select(blobs.c.id, blobs.c.size, blobs.c.chunks)
                    .where(blobs.c.key_id != active, blobs.c.key_id != AS_SEALED)
                    .order_by(blobs.c.id)
                    .limit(batch)
                ).all()
                picked: list[int] = []
                weight = 0
                for head in heads:
                    if picked and (head.chunks or weight + head.size > _REENCRYPT_BYTES):
                        break
                    picked.append(head.id)
                    weight += head.size
                    if head.chunks:
                        break
                rows = conn.execute(select(blobs).where(blobs.c.id.in_(picked))).all()
                if not rows:
                    conn.execute(
                        insert(audit).values(
                            at=now,
                            actor=clip_actor(actor),
                            action="reencrypt",
                            detail=f"{moved} blobs now under key {active}",
                        )
                    )
                    return moved
                for r in rows:
                    if r.chunks:  # chunk by chunk, under a fresh salt
                        reencrypt_chunked(conn, self.keys, ChunkedBlob.from_row(r))
                        continue
                    associated = blob_associated_data(r.message_id, r.kind, r.delivery_id)
                    plain = self.keys.decrypt(r.key_id, r.nonce, r.data, associated)
                    sealed = self.keys.encrypt(plain, associated)
                    conn.execute(
                        update(blobs)
                        .where(blobs.c.id == r.id)
                        .values(key_id=sealed.key_id, nonce=sealed.nonce, data=sealed.data)
                    )
                moved += len(rows)

    def backup(self, path: Path, *, actor: str, now: datetime) -> dict[str, int]:
        from kcbus.ledger._backup import backup

        with self._read_snapshot() as conn:
            counts = backup(conn, path, now=now)
        self.record("backup", actor=actor, detail=f"to {path.name}: {_fmt(counts)}", now=now)
        return counts

    def restore(
        self, path: Path, *, actor: str, now: datetime, replace: bool = False
    ) -> dict[str, int]:
        from kcbus.ledger._backup import restore

        with self._write() as conn:
            counts = restore(conn, path, replace=replace)
            conn.execute(
                insert(audit).values(
                    at=now,
                    actor=clip_actor(actor),
                    action="restore",
                    detail=f"from {path.name}: {_fmt(counts)}",
                )
            )
        return counts

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 per table over every row as stored (content still encrypted): two ledgers
        with equal fingerprints hold byte-identical data. Used to verify a restore."""
        from kcbus.ledger._backup import fingerprint

        with self._read_snapshot() as conn:
            return fingerprint(conn)

    @contextmanager
    def _read_snapshot(self) -> Iterator[Connection]:
        """A consistent read of every table: one snapshot while workers go on writing."""
        try:
            with self._engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise LedgerUnavailable(
                f"ledger database unavailable ({type(exc.orig).__name__})"
            ) from exc

    def due_destinations(self, now: datetime) -> list[str]:
        """Partners with deliveries waiting (to seal, to send, or to retry now), for mapping
        delivery tasks over destinations."""
        waiting = [
            str(DeliveryStatus.PENDING),
            str(DeliveryStatus.SEALED),
            str(DeliveryStatus.RETRYING),
        ]
        query = (
            select(deliveries.c.destination)
            .where(deliveries.c.status.in_(waiting))
            .where(or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now))
            .distinct()
            .order_by(deliveries.c.destination)
        )
        with self._read() as conn:
            return [str(r[0]) for r in conn.execute(query).all()]

    def stats(self) -> dict[str, int]:
        """Messages per status (all time), for a quick look."""
        with self._read() as conn:
            rows = conn.execute(
                select(messages.c.status, func.count()).group_by(messages.c.status)
            ).all()
        return {str(status): int(n) for status, n in rows}


def reason_given(refs: Sequence[str | int], flt: MessageFilter | None) -> bool:
    return bool(refs) or flt is not None


def _message_id(ref: str) -> str:
    """A message ID as the ledger stores it: UUIDs lower-case (RFC 4122 §3: case-insensitive on
    input; the open stage stores them so), any other ID exactly as the partner wrote it."""
    return ref.lower() if _UUID.match(ref) else ref


def _clip(text_: str, limit: int = 500) -> str:
    return text_ if len(text_) <= limit else text_[: limit - 1] + "…"


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {table}" for table, n in counts.items())
