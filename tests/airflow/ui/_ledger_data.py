"""Messages written into a real ledger through its own API (units of work), as the pipeline
stages would leave them: each step an event, deliveries per destination, content encrypted.

The API tests use this to get messages in every state without running a whole bus; the
browser test drives a real delivery through the runtime instead.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kcbus.ledger import DeliveryStatus, Ledger, NewEnvelope, Status

__all__ = ["Written", "write_message"]


@dataclass(frozen=True)
class Written:
    uuid: str
    ledger_id: int
    route: str


def write_message(
    ledger: Ledger,
    *,
    route: str,
    sender: str,
    recipients: Sequence[str],
    final: Status,
    message_type: str = "baugenehmigung.antrag.0200",
    inspection: str = "full",
    received_at: datetime | None = None,
    content: bytes = b"<antrag>demo</antrag>",
    reason_code: str | None = None,
    reason: str | None = None,
    actor: str = "kcbus@test",
    uuid: str | None = None,
) -> Written:
    """One message that went through the pipeline and ended in ``final``."""
    now = received_at or datetime.now(UTC)
    uuid = uuid or str(uuidlib.uuid4())
    step = timedelta(milliseconds=50)
    with ledger.unit(actor=actor, now=now) as unit:
        envelope = NewEnvelope(
            data=os.urandom(48), envelope_id=str(uuidlib.uuid4()), source="memory://in", peer=None
        )
        [message_id] = unit.receive([envelope])
        assert message_id is not None
        unit.claim_uuids([(message_id, uuid)])
        unit.update(
            message_id,
            uuid=uuid,
            route=route,
            inspection=inspection,
            sender=sender,
            recipient=",".join(recipients),
            message_type=message_type,
            standard="XBau",
            version="2.6",
            status=Status.OPENED,
        )
        unit.now = now + step
        unit.event(message_id, "open", Status.OPENED, detail=f"signed by {sender}")
        if final == Status.REJECTED:
            unit.update(
                message_id,
                status=Status.REJECTED,
                reason_code=reason_code or "schema-invalid",
                reason=reason or "line 12: /antrag/bauvorhaben: missing element",
            )
            unit.event(
                message_id,
                "validate",
                Status.REJECTED,
                reason_code=reason_code or "schema-invalid",
                detail=reason or "line 12: /antrag/bauvorhaben: missing element",
            )
            return Written(uuid, message_id, route)
        unit.now = now + 2 * step
        unit.event(message_id, "validate", Status.VALIDATED)
        if inspection == "full":
            unit.put_blob(message_id, "content", content)
        delivery_ids = unit.add_deliveries([(message_id, r) for r in recipients])
        unit.now = now + 3 * step
        unit.event(message_id, "route", Status.ROUTED, detail=f"to {', '.join(recipients)}")
        if final == Status.ROUTED:
            unit.update(message_id, status=Status.ROUTED)
            return Written(uuid, message_id, route)
        if final == Status.DEAD:
            error = reason or "connection refused by memory://down"
            for attempt, delivery_id in enumerate(delivery_ids, start=1):
                unit.now = now + (3 + attempt) * step
                unit.update_delivery(
                    delivery_id,
                    status=DeliveryStatus.DEAD,
                    attempts=3,
                    last_error_code="transient",
                    last_error=error,
                )
                unit.event(
                    message_id,
                    "deliver",
                    Status.DEAD,
                    delivery_id=delivery_id,
                    reason_code="transient",
                    detail=f"attempt 3 of 3: {error}",
                )
            unit.update(
                message_id,
                status=Status.DEAD,
                attempts=3,
                reason_code="transient",
                reason=error,
            )
            return Written(uuid, message_id, route)
        for delivery_id in delivery_ids:
            unit.now = now + 4 * step
            unit.update_delivery(
                delivery_id, status=DeliveryStatus.DELIVERED, attempts=1, delivered_at=unit.now
            )
            unit.event(message_id, "deliver", Status.DELIVERED, delivery_id=delivery_id)
        unit.update(message_id, status=final, attempts=1)
        if final == Status.ACKNOWLEDGED:
            unit.event(message_id, "acknowledge", Status.ACKNOWLEDGED)
    return Written(uuid, message_id, route)
