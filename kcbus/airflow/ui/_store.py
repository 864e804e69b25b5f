"""The seam between the operator's API and the ledger: what the page asks of the message store.

:class:`MessageStore` is the narrow protocol the API routes use (one implementation,
:class:`kcbus.airflow.ui._ledger_store.LedgerStore`, over kcbus's real ledger). It answers in
the API's own models (``_models``), so nothing of the ledger's tables leaks into the routes.

Invariants every implementation keeps:

* Reads never return content; :meth:`MessageStore.content` is the only way to it, and it
  records who looked and why before returning anything.
* Every write (re-send, resolve, content view) appends an event with the operator's Airflow
  user name as actor and the reason as detail; nothing is updated without its event.
* Counting a search is capped (``count_limit``) so a broad filter over millions of messages
  still answers quickly; the page then says "more than N".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kcbus.airflow.ui._models import (
    Bucket,
    Counts,
    GroupBy,
    HistoryEvent,
    MessagePage,
    MessageSummary,
)

__all__ = ["ActionOutcome", "MessageFilter", "MessageStore", "TaskRef"]


@dataclass(frozen=True)
class TaskRef:
    """An Airflow task instance, as the external-view tab names it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class MessageFilter:
    """Facts a message must have; ``None``/empty means "any". Text fields match exactly,
    ``uuid`` also as a prefix of at least 8 characters (operators paste shortened UUIDs)."""

    uuid: str | None = None
    flow: str | None = None
    sender: str | None = None
    recipient: str | None = None
    message_type: str | None = None
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    include_resolved: bool = True
    task: TaskRef | None = None


@dataclass(frozen=True)
class ActionOutcome:
    done: tuple[str, ...]
    skipped: tuple[str, ...] = ()


class MessageStore(Protocol):
    def flows(self) -> list[str]:
        """Names of the configured flows (routes), in config order."""
        ...

    def inspection(self, flow: str | None) -> str | None:
        """``full`` or ``end-to-end`` for a flow; ``None`` if the flow is unknown."""
        ...

    def counts(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: Bucket,
        group_by: GroupBy,
        flow: str | None,
    ) -> Counts: ...

    def search(
        self, where: MessageFilter, *, limit: int, offset: int, count_limit: int
    ) -> MessagePage: ...

    def detail(self, uuid: str) -> tuple[MessageSummary, list[HistoryEvent]]:
        """One message and its history, oldest event first; raises ``NotFound``."""
        ...

    def summaries(self, uuids: list[str]) -> list[MessageSummary]:
        """The named messages (unknown ones left out)."""
        ...

    def resend(self, uuids: list[str], *, actor: str, reason: str) -> ActionOutcome: ...

    def resolve(self, uuids: list[str], *, actor: str, reason: str) -> ActionOutcome: ...

    def content(self, uuid: str, *, actor: str, reason: str) -> bytes:
        """The message as the bus opened it (full inspection only), after recording the view."""
        ...
