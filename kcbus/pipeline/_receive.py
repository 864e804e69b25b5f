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
    readable = _readable(transport, deliveries, counts)
    try:
        items = []
        for delivery, data in readable:
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
        for delivery, _ in readable:
            # If even this fails, the transport redelivers unacknowledged items anyway.
            with contextlib.suppress(Exception):
                transport.release(delivery)
        raise
    for delivery, _ in readable:
        transport.acknowledge(delivery)
    counts.received = sum(1 for i in ids if i is not None)
    return counts


def _readable(
    transport: Transport, deliveries: list[Delivery], counts: StageCounts
) -> list[tuple[Delivery, bytes]]:
    """Read each delivery; park the ones that cannot be read as what they claim to be.

    A drop-folder file swapped for a symlink or a folder after listing (the file adapters
    refuse to follow it) would otherwise fail the whole batch on every pass. It goes to the
    transport's failed place (nothing is lost; an operator sees it); the others go on.
    Connection losses are not this: they propagate, and the batch is released for a retry.
    """
    readable = []
    for delivery in deliveries:
        try:
            data = delivery.read()
        except (ConnectionError, TimeoutError):
            for taken in deliveries:
                with contextlib.suppress(Exception):
                    transport.release(taken)
            raise
        except OSError:
            transport.reject(delivery, "unreadable-delivery")
            counts.rejected += 1
            continue
        readable.append((delivery, data))
    return readable
