"""The operator view's :class:`~kcbus.airflow.ui._store.MessageStore` over kcbus's ledger.

Everything goes through :class:`kcbus.ledger.Ledger`'s public query and action API (search,
count, counts, get, history, routes, went_dead, resend, mark_resolved, content), so the
operator view and ``kcbus ledger`` on the command line see and do exactly the same. The
task-instance tab filters by the actor its task wrote (``MessageFilter.actor`` with
:func:`~kcbus.airflow.ui.actor.task_actor`, an index lookup), alerts ask for the messages that
went DEAD in a run's window, and the flows without a config are the routes present.

Times are UTC throughout. The chart counts partner messages only (receipts kcbus writes would
double every bar); search, failures and alerts include receipts, whose delivery can fail too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

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
#: An alert names at most this many messages (a mail lists fewer still, see ``alerts``).
_DEAD_LIMIT = 10_000


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
        return self.ledger.routes()

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
        return self._summaries([self.ledger.get(ref)])[0]

    def detail(self, ref: str) -> MessageDetail:
        history = self.ledger.history(ref)
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
        still_dead = LedgerFilter(route=flow, status=(Status.DEAD,), resolved=False)
        rows = self.ledger.went_dead(since=since, until=until, flt=still_dead, limit=_DEAD_LIMIT)
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

    def _filter(self, where: MessageFilter) -> LedgerFilter:
        """The ledger's filter for ``where``."""
        t = where.task
        return LedgerFilter(
            uuid=where.uuid or None,
            actor=None if t is None else task_actor(t.dag_id, t.run_id, t.task_id, t.map_index),
            status=tuple(Status(s) for s in where.statuses),
            route=where.flow,
            sender=where.sender,
            recipient=where.recipient,
            message_type=where.message_type,
            since=where.since,
            until=where.until,
            resolved=None if where.include_resolved else False,
        )

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

