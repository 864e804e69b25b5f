"""The operator view's :class:`~kcbus.airflow.ui._store.MessageStore` over kcbus's ledger.

Everything goes through :class:`kcbus.ledger.Ledger`'s query and action API (search, count,
counts, history, resend, mark_resolved, content), so the operator view and ``kcbus ledger``
on the command line see and do exactly the same. Three questions that API has no call for
yet are answered with read-only queries on the ledger's tables (:func:`_event_message_ids`,
:meth:`LedgerStore.dead_between`, :meth:`LedgerStore.flows` without a config): messages by the
actor of their events (the task-instance tab), messages by the time of their DEAD transition
(alerts), and the routes present.

Times are UTC throughout. The chart counts partner messages only (receipts kcbus writes would
double every bar); search, failures and alerts include receipts, whose delivery can fail too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, select

from kcbus.airflow.ui._models import (
    ActionResult,
    Bucket,
    Counts,
    CountSeries,
    DeliveryState,
    GroupBy,
    HistoryEvent,
    MessageDetail,
    MessagePage,
    MessageSummary,
    Skipped,
)
from kcbus.airflow.ui._settings import UiSettings
from kcbus.airflow.ui._store import MessageFilter
from kcbus.airflow.ui.actor import task_actor
from kcbus.ledger import (
    ActionOutcome,
    DeliveryRow,
    EventRow,
    Kind,
    Ledger,
    MessageRow,
    Status,
    default_url,
)
from kcbus.ledger import MessageFilter as LedgerFilter

__all__ = ["LedgerStore"]

_Order = Callable[[str], tuple[int, str]]
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BUCKET = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_GROUP = {
    "status": "status",
    "flow": "route",
    "sender": "sender",
    "recipient": "recipient",
    "message_type": "message_type",
}
#: A task instance handles at most a few batches; more ids than this are not listed.
_TASK_MESSAGES = 50_000


class LedgerStore:
    """Answers the operator API from a :class:`~kcbus.ledger.Ledger`."""

    def __init__(self, ledger: Ledger, flows: Sequence[str] = ()) -> None:
        self.ledger = ledger
        self._flows = list(flows)

    @classmethod
    def from_settings(cls, settings: UiSettings) -> LedgerStore:
        flows: list[str] = []
        url = settings.ledger_url
        if settings.config is not None:
            # The same reading as the DAG factory's (``${VAR}`` expanded), so page and DAGs
            # agree on flows and ledger.
            from kcbus.airflow.settings import load_config

            config = load_config(settings.config)
            flows = list(config.routes)
            url = url or config.bus.ledger
        return cls(Ledger(url or default_url()), flows)

    def close(self) -> None:
        self.ledger.close()

    # -- reads ------------------------------------------------------------------------------

    def flows(self) -> list[str]:
        if self._flows:
            return list(self._flows)
        from kcbus.ledger._tables import messages

        with self.ledger._read() as conn:
            rows = conn.execute(
                select(messages.c.route).where(messages.c.route.is_not(None)).distinct()
            ).all()
        return sorted(str(r[0]) for r in rows)

    def counts(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: Bucket,
        group_by: GroupBy,
        flow: str | None,
    ) -> Counts:
        width = _BUCKET[bucket]
        start = _floor(since, width)
        n = max(1, -(-int((until - start).total_seconds()) // int(width.total_seconds())))
        rows = self.ledger.counts(
            since=start,
            until=until,
            bucket=width,
            group_by=_GROUP[group_by],  # type: ignore[arg-type]
            flt=LedgerFilter(kind=Kind.MESSAGE, route=flow or None),
        )
        buckets = [start + i * width for i in range(n)]
        series: dict[str, list[int]] = {}
        for row in rows:
            index = int((row.bucket - start) / width)
            if 0 <= index < n:
                series.setdefault(row.key or "—", [0] * n)[index] += row.count
        order = _status_order if group_by == "status" else _by_total(series)
        return Counts(
            bucket=bucket,
            group_by=group_by,
            since=start,
            until=until,
            buckets=buckets,
            series=[
                CountSeries(key=key, counts=counts, total=sum(counts))
                for key, counts in sorted(series.items(), key=lambda kv: order(kv[0]))
            ],
        )

    def search(
        self, where: MessageFilter, *, limit: int, offset: int, count_limit: int
    ) -> MessagePage:
        flt = self._filter(where)
        if flt is None:
            return MessagePage(items=[], total=0, limit=limit, offset=offset)
        rows = self.ledger.search(flt, limit=limit, offset=offset)
        total = self.ledger.count(flt, cap=count_limit + 1)
        return MessagePage(
            items=self._summaries(rows),
            total=min(total, count_limit),
            total_capped=total > count_limit,
            limit=limit,
            offset=offset,
        )

    def summary(self, ref: str) -> MessageSummary:
        return self._summaries([self.ledger.get(self._ledger_ref(ref))])[0]

    def detail(self, ref: str) -> MessageDetail:
        history = self.ledger.history(self._ledger_ref(ref))
        destinations = {d.id: d.destination for d in history.deliveries}
        return MessageDetail(
            message=self._summaries([history.message])[0],
            events=[_event(e, destinations) for e in history.events],
            deliveries=[_delivery(d) for d in history.deliveries],
            receipts=self._summaries(list(history.receipts)),
        )

    def dead_between(self, flow: str, *, since: datetime, until: datetime) -> list[MessageSummary]:
        """Messages of ``flow`` whose transition to DEAD happened in ``[since, until]``, still
        DEAD and unresolved now (for alerts)."""
        from kcbus.ledger._tables import events, messages

        query = (
            select(messages.c.id)
            .join(events, events.c.message_id == messages.c.id)
            .where(
                messages.c.route == flow,
                messages.c.status == str(Status.DEAD),
                messages.c.resolved_at.is_(None),
                events.c.status == str(Status.DEAD),
                and_(events.c.at >= since, events.c.at <= until),
            )
            .distinct()
        )
        with self.ledger._read() as conn:
            ids = tuple(int(r[0]) for r in conn.execute(query).all())
        if not ids:
            return []
        rows = self.ledger.search(LedgerFilter(ledger_ids=ids), limit=len(ids), newest_first=False)
        return self._summaries(rows)

    # -- actions ----------------------------------------------------------------------------

    def resend(self, refs: list[str], *, actor: str, reason: str) -> ActionResult:
        outcome = self.ledger.resend(refs, actor=actor, reason=reason, now=datetime.now(UTC))
        return _result(outcome)

    def resolve(self, refs: list[str], *, actor: str, reason: str) -> ActionResult:
        outcome = self.ledger.mark_resolved(
            refs, actor=actor, reason=reason, now=datetime.now(UTC)
        )
        return _result(outcome)

    def content(self, ref: str, *, actor: str, reason: str) -> bytes:
        return self.ledger.content(ref, actor=actor, reason=reason, now=datetime.now(UTC))

    # -- helpers ----------------------------------------------------------------------------

    def _filter(self, where: MessageFilter) -> LedgerFilter | None:
        """The ledger's filter for ``where``; ``None`` when nothing can match."""
        ids: tuple[int, ...] = ()
        if where.task is not None:
            t = where.task
            ids = self._event_message_ids(task_actor(t.dag_id, t.run_id, t.task_id, t.map_index))
            if not ids:
                return None
        return LedgerFilter(
            uuid=_normal_id(where.uuid) if where.uuid else None,
            ledger_ids=ids,
            status=tuple(Status(s) for s in where.statuses),
            route=where.flow,
            sender=where.sender,
            recipient=where.recipient,
            message_type=where.message_type,
            since=where.since,
            until=where.until,
            resolved=None if where.include_resolved else False,
        )

    def _ledger_ref(self, ref: str) -> str:
        """``ref`` as the ledger's ``get`` understands it. Message IDs that are not UUIDs (a
        CDA document ID ``root^extension``, an XJustiz ``eigeneNachrichtenID``) are looked up
        by equality and named by ledger ID."""
        if ref.startswith("#") or ref.isdigit() or _UUID.match(ref):
            return ref
        found = self.ledger.search(LedgerFilter(uuid=ref), limit=1, newest_first=False)
        return f"#{found[0].ledger_id}" if found else ref

    def _event_message_ids(self, actor: str) -> tuple[int, ...]:
        from kcbus.ledger._tables import events

        query = (
            select(events.c.message_id)
            .where(events.c.actor == actor)
            .distinct()
            .limit(_TASK_MESSAGES)
        )
        with self.ledger._read() as conn:
            return tuple(int(r[0]) for r in conn.execute(query).all())

    def _summaries(self, rows: Sequence[MessageRow]) -> list[MessageSummary]:
        parents = {r.parent_id for r in rows if r.parent_id is not None}
        parent_refs: dict[int, str] = {}
        if parents:
            found = self.ledger.search(
                LedgerFilter(ledger_ids=tuple(parents)), limit=len(parents)
            )
            parent_refs = {p.ledger_id: _ref(p) for p in found}
        return [
            _summary(r, parent_refs.get(r.parent_id) if r.parent_id is not None else None)
            for r in rows
        ]


def _ref(row: MessageRow) -> str:
    """A URL-safe handle: the UUID, or ``#<ledger id>`` for message IDs that are no UUIDs."""
    return row.uuid if row.uuid and _UUID.match(row.uuid) else f"#{row.ledger_id}"


def _normal_id(message_id: str) -> str:
    """UUIDs are compared lower-case (RFC 4122 §3: case-insensitive on input); other message
    IDs exactly as the partner wrote them."""
    return message_id.lower() if _UUID.match(message_id) else message_id


def _summary(row: MessageRow, parent_ref: str | None) -> MessageSummary:
    inspection = row.inspection if row.inspection in ("full", "end-to-end") else None
    return MessageSummary(
        ref=_ref(row),
        uuid=row.uuid,
        ledger_id=row.ledger_id,
        kind="receipt" if row.kind == Kind.RECEIPT else "message",
        receipt_type=row.receipt_type,
        parent_ref=parent_ref,
        flow=row.route,
        inspection=inspection,  # type: ignore[arg-type]
        sender=row.sender,
        recipient=row.recipient,
        message_type=row.message_type,
        standard=row.standard,
        version=row.version,
        status=str(row.status),
        attempts=row.attempts,
        received_at=row.received_at,
        updated_at=row.updated_at,
        next_attempt_at=row.next_attempt_at,
        reason_code=row.reason_code,
        reason=row.reason,
        resolved=row.resolved,
        test=row.test,
    )


def _event(row: EventRow, destinations: dict[int, str]) -> HistoryEvent:
    return HistoryEvent(
        at=row.at,
        stage=row.stage,
        status=row.status,
        actor=row.actor,
        reason_code=row.reason_code,
        detail=row.detail,
        destination=destinations.get(row.delivery_id) if row.delivery_id else None,
    )


def _delivery(row: DeliveryRow) -> DeliveryState:
    return DeliveryState(
        destination=row.destination,
        status=str(row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        last_error_code=row.last_error_code,
        last_error=row.last_error,
    )


def _result(outcome: ActionOutcome) -> ActionResult:
    return ActionResult(
        action="resend" if outcome.action == "resend" else "resolve",
        actor=outcome.actor,
        reason=outcome.reason,
        refs=[_ref(m) for m in outcome.acted],
        skipped=[Skipped(ref=ref, why=why) for ref, why in outcome.skipped],
    )


def _floor(moment: datetime, width: timedelta) -> datetime:
    """Start of the bucket holding ``moment`` (UTC, aligned to whole minutes/hours/days)."""
    seconds = int(width.total_seconds())
    epoch = int(moment.astimezone(UTC).timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


_LIFE_CYCLE = [str(s) for s in Status]


def _status_order(key: str) -> tuple[int, str]:
    return (_LIFE_CYCLE.index(key) if key in _LIFE_CYCLE else len(_LIFE_CYCLE), key)


def _by_total(series: dict[str, list[int]]) -> _Order:
    totals = {key: sum(counts) for key, counts in series.items()}
    return lambda key: (-totals[key], key)

