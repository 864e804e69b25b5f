"""Pieces the stages share: header facts, stage counts, rejection and receipt bookkeeping.

Rejections and receipts are written in the same unit (transaction) as the status change that
causes them: a crash can never leave a REJECTED message without its Rückweisung, or a
Rückweisung for a message that is not REJECTED.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from kcbus.config import Partner
from kcbus.ledger import Kind, MessageRow, NewMessage, Status, Unit
from kcbus.pipeline._runtime import Runtime
from kcbus.receipts import STANDARD, VERSION, Fault, Handover, ReceiptType, Reference, redact
from xoev import KcbusError

__all__ = [
    "Facts",
    "ReceiptQueue",
    "StageCounts",
    "fault_of",
    "reference_of",
    "reject",
    "retry_later",
    "with_fields",
]


@dataclass(frozen=True)
class Facts:
    """The routing facts of a message, kept (encrypted) beside it from the open stage on."""

    message_uuid: str
    message_type: str | None
    standard: str | None
    version: str | None
    test: bool
    author: str | None  # address ``verzeichnisdienst:kennung``
    readers: tuple[str, ...]  # addresses
    inspection: str  # what the envelope was: "full" or "end-to-end"
    final_recipient: str | None = None  # end-to-end: the partner the content is sealed for
    attachments: int = 0
    profile: str | None = None

    def dump(self) -> bytes:
        # Not dataclasses.asdict: it deep-copies, and this runs once per message.
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return json.dumps(values, separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> Facts:
        raw = json.loads(data)
        raw["readers"] = tuple(raw["readers"])
        return cls(**raw)


@dataclass
class StageCounts:
    """What one pass of the pipeline did; goes into XComs (counts only, never content)."""

    received: int = 0
    opened: int = 0
    validated: int = 0
    routed: int = 0
    sealed: int = 0
    #: Deliveries handed to a transport (a message may have several).
    sent: int = 0
    #: Messages (and receipts) delivered to all their destinations.
    delivered: int = 0
    acknowledged: int = 0
    rejected: int = 0
    duplicates: int = 0
    retrying: int = 0
    dead: int = 0
    receipts: int = 0

    def __iadd__(self, other: StageCounts) -> StageCounts:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def progress(self) -> int:
        """Transitions made (0: nothing was due)."""
        return sum(getattr(self, name) for name in self.__dataclass_fields__)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def fault_of(exc: KcbusError) -> Fault:
    """A receipt fault from an error: its code, its text (validator quotes removed), and the
    line/XPath if it carries them."""
    line = getattr(exc, "line", None)
    xpath = getattr(exc, "xpath", None) or getattr(exc, "path", None)
    return Fault(
        reason_code=exc.reason_code,
        text=redact(str(exc)) or exc.reason_code,
        xpath=xpath if isinstance(xpath, str) else None,
        line=line if isinstance(line, int) else None,
    )


def retry_later(
    rt: Runtime, unit: Unit, row: MessageRow, stage: str, exc: KcbusError, counts: StageCounts
) -> None:
    """A stage could not finish a message for a reason that is not the partner's (a key not
    yet imported, a schema folder missing): try again later, DEAD after the retry budget."""
    policy = rt.retry_policy(row.route)
    attempts = row.attempts + 1
    text = redact(str(exc))
    if policy.exhausted(attempts):
        unit.update(
            row.ledger_id,
            status=Status.DEAD,
            attempts=attempts,
            next_attempt_at=None,
            reason_code=exc.reason_code,
            reason=text,
        )
        unit.event(row.ledger_id, stage, Status.DEAD, detail=text, reason_code=exc.reason_code)
        counts.dead += 1
        return
    wait = policy.delay(attempts, rt.rng)
    unit.update(
        row.ledger_id,
        attempts=attempts,
        next_attempt_at=unit.now + wait,
        reason_code=exc.reason_code,
        reason=text,
    )
    unit.event(
        row.ledger_id,
        stage,
        None,
        reason_code=exc.reason_code,
        detail=f"attempt {attempts} failed, next in {_human(wait)}: {text}",
    )
    counts.retrying += 1


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


@dataclass
class ReceiptQueue:
    """Receipts to create in this unit (one ``executemany`` at the end of the batch)."""

    rt: Runtime
    items: list[NewMessage] = field(default_factory=list)

    def add(
        self,
        parent: MessageRow,
        to: Partner | None,
        receipt_type: ReceiptType,
        *,
        reference: Reference,
        faults: Sequence[Fault] = (),
        handovers: Sequence[Handover] = (),
        test: bool = False,
        unit: Unit,
    ) -> None:
        """Queue a receipt for ``to`` about ``parent``, if that partner takes this kind."""
        if to is None:
            unit.event(
                parent.ledger_id,
                "acknowledge",
                None,
                detail=f"no {receipt_type.kind} receipt: the sender is not identified",
            )
            return
        if receipt_type.kind not in to.receipts:
            return
        if to.deliver_to is None and to.id not in self.rt.transports:
            unit.event(
                parent.ledger_id,
                "acknowledge",
                None,
                detail=f"no {receipt_type.kind} receipt: partner {to.id} has no deliver_to",
            )
            return
        now = unit.now
        receipt_uuid = str(uuid.uuid4())
        content = self.rt.receipts.build(
            receipt_type,
            receipt_uuid=receipt_uuid,
            now=now,
            reader=self.rt.addressee(to),
            reference=reference,
            test=test,
            faults=faults,
            handovers=handovers,
            route=parent.route,
            inspection=parent.inspection,
        )
        self.items.append(
            NewMessage(
                kind=Kind.RECEIPT,
                uuid=receipt_uuid,
                parent_id=parent.ledger_id,
                receipt_type=receipt_type.kind,
                route=parent.route,
                sender=self.rt.config.bus.id,
                destination=to.id,
                message_type=receipt_type.value,
                standard=STANDARD,
                version=VERSION,
                test=test,
                content=content,
            )
        )
        unit.event(
            parent.ledger_id,
            "acknowledge",
            None,
            detail=f"{receipt_type.value} {receipt_uuid} to {to.id}",
        )

    def flush(self, unit: Unit) -> int:
        created = unit.create(self.items)
        self.items = []
        return len(created)


def reference_of(row: MessageRow, message_type: str | None = None) -> Reference:
    return Reference(
        received_at=row.received_at,
        message_uuid=row.uuid,
        envelope_id=row.envelope_id,
        message_type=message_type or row.message_type,
    )


def reject(
    rt: Runtime,
    unit: Unit,
    row: MessageRow,
    stage: str,
    faults: Sequence[Fault],
    receipts: ReceiptQueue,
    counts: StageCounts,
    *,
    sender: Partner | None,
    status: Status = Status.REJECTED,
    fields: dict[str, object] | None = None,
) -> None:
    """REJECTED (or DUPLICATE) with the first fault as the reason; a Rückweisung to the sender."""
    first = faults[0]
    unit.update(
        row.ledger_id,
        status=status,
        reason_code=first.reason_code,
        reason=first.text,
        next_attempt_at=None,
        **(fields or {}),
    )
    where = "".join(
        [f" line {first.line}" if first.line else "", f" at {first.xpath}" if first.xpath else ""]
    )
    more = f" (+{len(faults) - 1} more)" if len(faults) > 1 else ""
    unit.event(
        row.ledger_id,
        stage,
        status,
        reason_code=first.reason_code,
        detail=f"{first.text}{where}{more}",
    )
    if status is Status.DUPLICATE:
        counts.duplicates += 1
    else:
        counts.rejected += 1
    merged = row if not fields else with_fields(row, fields)
    receipts.add(
        merged,
        sender,
        ReceiptType.REJECTED,
        reference=reference_of(merged),
        faults=faults,
        test=bool(merged.test),
        unit=unit,
    )


def with_fields(row: MessageRow, fields: dict[str, object]) -> MessageRow:
    """``row`` as it is after ``fields`` were written (statuses as enums)."""
    known = {k: v for k, v in fields.items() if k in MessageRow.__dataclass_fields__}
    if "status" in known:
        known["status"] = Status(str(known["status"]))
    return replace(row, **known)  # type: ignore[arg-type]
