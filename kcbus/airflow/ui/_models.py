"""What the operator's API answers and accepts (pydantic models; OpenAPI is generated from them).

Invariant: no field carries message content or personal data. A message is described by its
IDs, flow, partners (IDs of the partner registry, not people), type, status, attempts, times and
reason codes/texts that kcbus itself wrote (error texts never contain content, see
``xoev._errors``). Content is only ever returned by the content endpoint, as its own response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActionResult",
    "CountSeries",
    "Counts",
    "DeliveryState",
    "HistoryEvent",
    "Me",
    "MessageDetail",
    "MessagePage",
    "MessageSummary",
    "Reason",
    "ResendFilter",
    "Skipped",
]

Bucket = Literal["minute", "hour", "day"]
GroupBy = Literal["status", "flow", "sender", "recipient", "message_type"]


class MessageSummary(BaseModel):
    """One message (or receipt) as the ledger knows it."""

    #: How to name it in the API and on the page: its UUID, or ``#<ledger id>`` before the bus
    #: read its header (e.g. rejected as unreadable).
    ref: str
    uuid: str | None
    ledger_id: int
    kind: Literal["message", "receipt"]
    #: For receipts: ``accepted``, ``rejected`` or ``delivered``.
    receipt_type: str | None = None
    #: For receipts: the ``ref`` of the message it answers.
    parent_ref: str | None = None
    flow: str | None
    inspection: Literal["full", "end-to-end"] | None
    sender: str | None
    recipient: str | None
    message_type: str | None
    standard: str | None
    version: str | None
    status: str
    attempts: int
    received_at: datetime
    updated_at: datetime | None
    next_attempt_at: datetime | None = None
    #: Reason code (kcbus code list) of the last failure, e.g. ``schema-invalid``.
    reason_code: str | None = None
    #: kcbus's own text for the last failure: IDs, lines, XPaths; never content.
    reason: str | None = None
    resolved: bool = False
    test: bool = False


class HistoryEvent(BaseModel):
    """One transition of a message: when, which stage, by whom, what came of it."""

    at: datetime
    stage: str
    status: str | None
    actor: str | None
    reason_code: str | None = None
    detail: str | None
    #: The destination this event is about, for per-destination delivery steps.
    destination: str | None = None


class DeliveryState(BaseModel):
    """One destination of a message."""

    destination: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error_code: str | None
    last_error: str | None


class MessageDetail(BaseModel):
    """One message with its whole history: the timeline of the page."""

    message: MessageSummary
    events: list[HistoryEvent]
    deliveries: list[DeliveryState] = Field(default_factory=list)
    #: Receipts kcbus sent for this message (accepted, rejected, delivered).
    receipts: list[MessageSummary] = Field(default_factory=list)
    #: Whether this caller may request the content (route, setting and permission allow it).
    content_viewable: bool = False
    #: Why not, if not (``end-to-end``, ``disabled``, ``permission``).
    content_refusal: str | None = None


class MessagePage(BaseModel):
    items: list[MessageSummary]
    #: Messages matching the filter, at most ``count_limit`` counted (then ``total_capped``).
    total: int
    total_capped: bool = False
    limit: int
    offset: int


class CountSeries(BaseModel):
    key: str
    counts: list[int]
    total: int


class Counts(BaseModel):
    bucket: Bucket
    group_by: GroupBy
    since: datetime
    until: datetime
    buckets: list[datetime]
    series: list[CountSeries]


class Me(BaseModel):
    user: str
    can_edit: bool
    #: Flows whose full-inspection content edit users may look at (``*``: all); usually none.
    content_flows: list[str]
    flows: list[str]
    statuses: list[str]


class Reason(BaseModel):
    """Why the operator acts; recorded in the ledger beside their Airflow user name."""

    reason: str = Field(min_length=3, max_length=500)


class ResendFilter(Reason):
    """Re-send every message matching these facts (the same filter as the search). Unknown
    fields are refused: a filter the server ignored would re-send more than the operator saw."""

    model_config = ConfigDict(extra="forbid")

    uuid: str | None = None
    flow: str | None = None
    sender: str | None = None
    recipient: str | None = None
    message_type: str | None = None
    status: list[str] = Field(default_factory=lambda: ["DEAD"])
    since: datetime | None = None
    until: datetime | None = None
    include_resolved: bool = False
    #: Only what this task instance handled (all four, as in the search).
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int = -1
    #: Refuse to act on more than this many (the operator narrows the filter instead).
    max_messages: int = Field(default=1000, ge=1, le=10000)


class Skipped(BaseModel):
    ref: str
    why: str


class ActionResult(BaseModel):
    action: Literal["resend", "resolve"]
    actor: str
    reason: str
    #: ``ref`` of every message acted on.
    refs: list[str]
    #: Messages named or matching but not acted on, with why (e.g. REJECTED cannot be re-sent).
    skipped: list[Skipped] = Field(default_factory=list)
