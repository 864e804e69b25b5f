"""Alerts: mail the operators when messages of a flow go DEAD (dead letter).

:class:`DeadLetterNotifier` is an Airflow notifier (``airflow.sdk.BaseNotifier``): set it as the
flow DAG's ``on_success_callback`` and ``on_failure_callback`` (a delivery that exhausts its
retry budget marks the message DEAD without failing the task, so success callbacks must report
too). Each call looks at the DAG run's window ``[start_date, end_date or now]``, finds the
messages of its flow whose DEAD transition happened in it, and sends one mail through Airflow's
email settings (``[email] email_backend``, by default SMTP with the ``[smtp]`` section). No
DEAD message in the window: no mail.

Invariant: the mail carries IDs, partner IDs, message types, attempts and kcbus's reason codes
and texts, never content or personal data (it leaves the system). Reason texts are kcbus's own
error texts, which never quote content (``xoev._errors``).

Each DEAD transition belongs to exactly one DAG run's window as long as a flow's runs do not
overlap (the DAG factory runs one at a time per flow); overlapping runs may report a message
twice, never zero times.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from airflow.sdk import BaseNotifier

from kcbus.airflow.ui._settings import UiSettings

if TYPE_CHECKING:
    from airflow.sdk import Context

    from kcbus.airflow.ui._models import MessageSummary

__all__ = ["DeadLetterNotifier", "dead_letter_mail"]

#: At most this many messages are listed in one mail (the rest: "and N more", see the page).
MAX_LISTED = 200


class DeadLetterNotifier(BaseNotifier):
    """Mail the DEAD messages of ``flow`` from the run that calls it (IDs and reasons only)."""

    template_fields = ("flow", "to")

    def __init__(
        self,
        *,
        flow: str,
        to: str | Sequence[str],
        settings: UiSettings | None = None,
        page_url: str | None = None,
    ) -> None:
        super().__init__()
        self.flow = flow
        self.to = to
        self._settings = settings
        self._page_url = page_url

    def notify(self, context: Context) -> None:
        from airflow.utils.email import send_email

        from kcbus.airflow.ui._ledger_store import LedgerStore

        since, until = _window(context)
        store = LedgerStore.from_settings(self._settings or UiSettings.from_airflow())
        try:
            dead = store.dead_between(self.flow, since=since, until=until)
        finally:
            store.close()
        if not dead:
            return
        subject, body = dead_letter_mail(
            self.flow, dead, since=since, until=until, page_url=self._page_link()
        )
        recipients = [self.to] if isinstance(self.to, str) else list(self.to)
        send_email(to=recipients, subject=subject, html_content=body)

    def _page_link(self) -> str | None:
        if self._page_url is not None:
            return self._page_url
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        if not base:
            return None
        return f"{base}/kcbus/ui/?{urlencode({'flow': self.flow, 'status': 'DEAD'})}"


def _window(context: Context) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    start = getattr(run, "start_date", None) or getattr(ti, "start_date", None)
    end = getattr(run, "end_date", None) or now
    if start is None:
        # Called outside a run (by hand): the last hour.
        from datetime import timedelta

        start = now - timedelta(hours=1)
    return _utc(start), _utc(end)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def dead_letter_mail(
    flow: str,
    dead: Sequence[MessageSummary],
    *,
    since: datetime,
    until: datetime,
    page_url: str | None,
) -> tuple[str, str]:
    """Subject and HTML body of the alert; every value is escaped."""
    esc = html.escape
    subject = f"[kcbus] {len(dead)} dead message(s) in flow {flow}"
    rows = []
    for m in dead[:MAX_LISTED]:
        cells = (
            m.uuid or f"#{m.ledger_id}",
            m.message_type or "",
            f"{m.sender or '?'} → {m.recipient or '?'}",
            str(m.attempts),
            m.reason_code or "",
            m.reason or "",
        )
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    more = len(dead) - MAX_LISTED
    link = (
        f'<p><a href="{esc(page_url, quote=True)}">Open the messages in Airflow</a></p>'
        if page_url
        else ""
    )
    body = (
        f"<p>{len(dead)} message(s) of flow <b>{esc(flow)}</b> went DEAD between "
        f"{esc(since.isoformat(timespec='seconds'))} and "
        f"{esc(until.isoformat(timespec='seconds'))}: their delivery retry budget is spent. "
        "Re-send or resolve them in the operator view.</p>"
        "<table border='1' cellpadding='4' cellspacing='0'>"
        "<tr><th>message</th><th>type</th><th>from → to</th><th>attempts</th>"
        "<th>reason code</th><th>reason</th></tr>" + "".join(rows) + "</table>"
        + (f"<p>… and {more} more.</p>" if more > 0 else "")
        + link
    )
    return subject, body
