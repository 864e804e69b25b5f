"""Stage *receive*: a transport's deliveries → RECEIVED rows, then acknowledge the transport.

Invariant (DESIGN.md, "Message life cycle" 1): an envelope is in the ledger — committed,
raw bytes stored encrypted — *before* its transport is acknowledged. A crash in between makes
the transport deliver it again; the ledger recognises the same bytes (SHA-256, unique) and
stores nothing twice, and the redelivery is acknowledged. If the ledger cannot take the batch,
the deliveries are released so they come back.
"""

from __future__ import annotations

import contextlib

from adapters.envelope import Malformed, peek_envelope
from adapters.transport import Delivery, Transport
from kcbus.ledger import NewEnvelope
from kcbus.pipeline._common import StageCounts
from kcbus.pipeline._runtime import Runtime

__all__ = ["receive_batch"]


def _envelope_id(delivery: Delivery, data: bytes) -> str | None:
    try:
        return peek_envelope(data).envelope_id or delivery.envelope_id
    except Malformed:
        return delivery.envelope_id


def receive_batch(
    rt: Runtime,
    transport: Transport,
    max_items: int,
    *,
    timeout: float = 0.0,
    source: str | None = None,
) -> StageCounts:
    counts = StageCounts()
    deliveries = transport.receive(max_items, timeout)
    if not deliveries:
        return counts
    try:
        items = []
        for delivery in deliveries:
            data = delivery.read()
            items.append(
                NewEnvelope(
                    data=data,
                    envelope_id=_envelope_id(delivery, data),
                    source=source or delivery.transport,
                    peer=delivery.peer,
                )
            )
        with rt.ledger.unit(actor=rt.actor, now=rt.now()) as unit:
            ids = unit.receive(items)
    except BaseException:
        for delivery in deliveries:
            # If even this fails, the transport redelivers unacknowledged items anyway.
            with contextlib.suppress(Exception):
                transport.release(delivery)
        raise
    for delivery in deliveries:
        transport.acknowledge(delivery)
    counts.received = sum(1 for i in ids if i is not None)
    return counts
