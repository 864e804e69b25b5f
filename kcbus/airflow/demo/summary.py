"""What happened, per flow, read from the ledger (the operator's source of truth).

:func:`summarize` counts a set of messages (by ledger filter) per route: received, delivered,
rejected by reason code, duplicates, dead, still open, and the bus latency (ledger arrival →
last delivery handed to the recipient's transport) as p50/p95. :func:`check` compares the
ledger with the demo's expectations. Only IDs, codes and counts: no content.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kcbus.airflow.demo.traffic import Expectation
from kcbus.ledger import Kind, Ledger, MessageFilter, MessageRow, Status

__all__ = ["FlowSummary", "check", "percentile", "render", "summarize"]

_DELIVERED = {Status.DELIVERED, Status.ACKNOWLEDGED}
_OPEN = {Status.RECEIVED, Status.OPENED, Status.VALIDATED, Status.ROUTED, Status.RETRYING}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class FlowSummary:
    flow: str
    received: int = 0
    delivered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead: int = 0
    open: int = 0
    receipts: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        return percentile(self.latencies, 50) if self.latencies else None

    @property
    def p95(self) -> float | None:
        return percentile(self.latencies, 95) if self.latencies else None

    @property
    def settled(self) -> bool:
        return self.open == 0


def _latency(ledger: Ledger, row: MessageRow) -> float | None:
    times = [d.delivered_at for d in ledger.history(row.ledger_id).deliveries]
    done = [t for t in times if t is not None]
    if not done or len(done) != len(times):
        return None
    return (max(done) - row.received_at).total_seconds()


def _rows(ledger: Ledger, flt: MessageFilter) -> Iterable[MessageRow]:
    offset = 0
    while True:
        page = ledger.search(flt, limit=500, offset=offset, newest_first=False)
        yield from page
        if len(page) < 500:
            return
        offset += len(page)


def summarize(ledger: Ledger, *, since: datetime | None = None) -> list[FlowSummary]:
    """Per route (and ``(none)`` for messages refused before a route was known)."""
    flows: dict[str, FlowSummary] = {}
    for row in _rows(ledger, MessageFilter(since=since)):
        flow = row.route or "(none)"
        summary = flows.setdefault(flow, FlowSummary(flow))
        if row.kind is Kind.RECEIPT:
            summary.receipts += 1
            continue
        summary.received += 1
        if row.status in _DELIVERED:
            summary.delivered += 1
            latency = _latency(ledger, row)
            if latency is not None:
                summary.latencies.append(latency)
        elif row.status is Status.REJECTED:
            summary.rejected[row.reason_code or "unknown"] += 1
        elif row.status is Status.DUPLICATE:
            summary.duplicates += 1
        elif row.status is Status.DEAD:
            summary.dead += 1
        elif row.status in _OPEN:
            summary.open += 1
    return sorted(flows.values(), key=lambda s: s.flow)


def _outcome(row: MessageRow) -> str:
    if row.status in _DELIVERED:
        return "delivered"
    return {Status.REJECTED: "rejected", Status.DUPLICATE: "duplicate"}.get(
        row.status, str(row.status)
    )


def check(ledger: Ledger, expectations: Sequence[Expectation]) -> list[str]:
    """Every expectation the ledger does not meet, as one line each (empty: all met).

    Copies of one message (same message ID, several envelopes) are checked as a group: which
    copy the bus saw first depends on the transport's order (a drop folder has none), so the
    group must hold the expected outcomes, in any order.
    """
    from kcbus._errors import NotFound

    problems = []
    groups: dict[tuple[str, str], list[Expectation]] = {}
    for exp in expectations:
        groups.setdefault((exp.sent.flow, exp.sent.message_id), []).append(exp)
    for (flow, _), group in groups.items():
        rows: list[MessageRow] = []
        for exp in group:
            try:
                rows.append(ledger.get(exp.sent.envelope_id))
            except NotFound:
                problems.append(f"{flow}: envelope {exp.sent.envelope_id} is not in the ledger")
        if len(rows) != len(group):
            continue
        def facts(outcome: str, reason: str | None) -> tuple[str, str]:
            return (outcome, "" if outcome == "delivered" else reason or "")

        got = sorted(facts(_outcome(r), r.reason_code) for r in rows)
        expected = sorted(facts(e.outcome, e.reason_code) for e in group)
        if got != expected:
            seen = ", ".join(f"{r.ref} is {r.status} ({r.reason_code or '-'})" for r in rows)
            wanted = ", ".join(f"{o}{f' ({c})' if c else ''}" for o, c in expected)
            problems.append(f"{flow}: {seen}; expected {wanted}")
    return problems


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(summaries: Sequence[FlowSummary]) -> str:
    """A plain-text table, one line per flow, rejection reasons below."""
    head = (f"{'flow':<14}{'received':>9}{'delivered':>10}{'rejected':>9}{'dupl.':>6}"
            f"{'dead':>5}{'open':>5}{'receipts':>9}{'p50':>9}{'p95':>9}")
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(
            f"{s.flow:<14}{s.received:>9}{s.delivered:>10}{sum(s.rejected.values()):>9}"
            f"{s.duplicates:>6}{s.dead:>5}{s.open:>5}{s.receipts:>9}"
            f"{_seconds(s.p50):>9}{_seconds(s.p95):>9}"
        )
        for code, n in sorted(s.rejected.items()):
            lines.append(f"{'':<14}  rejected {n} x {code}")
    return "\n".join(lines)
