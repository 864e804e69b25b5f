"""The seam between the operator's API and the ledger: what the page asks of the message store.

:class:`MessageStore` is the narrow protocol the API routes use; its implementation is
:class:`kcbus.airflow.ui._ledger_store.LedgerStore` over kcbus's real ledger
(:class:`kcbus.ledger.Ledger`). It answers in the API's own models (``_models``), so nothing
of the ledger's rows leaks into the routes unchecked.

Invariants every implementation keeps:

* Reads never return content; :meth:`MessageStore.content` is the only way to it, and the
  ledger records who looked and why in the same transaction that reads it.
* Every write (re-send, resolve, content view) appends an event with the operator's Airflow
  user name as actor and the reason as detail; nothing changes without its event.
* Counting a search is capped (``count_limit``) so a broad filter over millions of messages
  still answers quickly; the page then says "more than N".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kcbus.airflow.ui._models import (
    ActionResult,
    Bucket,
    Counts,
    GroupBy,
    MessageDetail,
    MessagePage,
    MessageSummary,
)

__all__ = ["MessageFilter", "MessageStore", "TaskRef"]


@dataclass(frozen=True)
class TaskRef:
    """An Airflow task instance, as the external-view tab names it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class MessageFilter:
    """Facts a message must have; ``None``/empty means "any". ``message_type`` may use ``*``."""

    uuid: str | None = None
    flow: str | None = None
    sender: str | None = None
    recipient: str | None = None
    message_type: str | None = None
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    include_resolved: bool = True
    #: Only messages this task instance worked on (an event with its actor name).
    task: TaskRef | None = None


class MessageStore(Protocol):
    def flows(self) -> list[str]:
        """Names of the flows (routes), in config order."""
        ...

    def counts(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: Bucket,
        group_by: GroupBy,
        flow: str | None,
    ) -> Counts:
        """Partner messages received per bucket in ``[since, until)``, one series per key."""
        ...

    def search(
        self, where: MessageFilter, *, limit: int, offset: int, count_limit: int
    ) -> MessagePage:
        """Newest first."""
        ...

    def detail(self, ref: str) -> MessageDetail:
        """One message by UUID or ``#<ledger id>``, its history oldest event first;
        raises :class:`kcbus._errors.NotFound`."""
        ...

    def summary(self, ref: str) -> MessageSummary: ...

    def resend(self, refs: list[str], *, actor: str, reason: str) -> ActionResult: ...

    def resolve(self, refs: list[str], *, actor: str, reason: str) -> ActionResult: ...

    def content(self, ref: str, *, actor: str, reason: str) -> bytes:
        """The message as the bus opened it (full inspection only), recorded as viewed."""
        ...
