"""Message and delivery statuses (DESIGN.md, "Message life cycle").

A message moves RECEIVED → OPENED → VALIDATED → ROUTED → DELIVERED → ACKNOWLEDGED, or ends
REJECTED (partner's fault, a Rückweisung goes back), DUPLICATE (its UUID was seen before) or
DEAD (delivery retry budget spent). RETRYING means a delivery waits for its next attempt.
Each destination of a message has its own delivery: PENDING → SEALED → DELIVERED, with
RETRYING and DEAD as for messages; the message's status summarises its deliveries.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SETTLED", "DeliveryStatus", "Kind", "Status"]


class Status(StrEnum):
    RECEIVED = "RECEIVED"
    OPENED = "OPENED"
    VALIDATED = "VALIDATED"
    ROUTED = "ROUTED"
    DELIVERED = "DELIVERED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"
    RETRYING = "RETRYING"
    DEAD = "DEAD"


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    SEALED = "SEALED"
    DELIVERED = "DELIVERED"
    RETRYING = "RETRYING"
    DEAD = "DEAD"


class Kind(StrEnum):
    #: A partner's message passing through the bus.
    MESSAGE = "message"
    #: A receipt kcbus wrote (Eingangsbestätigung, Rückweisung, Zustellbestätigung).
    RECEIPT = "receipt"


#: Statuses in which nothing more happens to a message (retention may prune it). DEAD is not
#: settled until an operator resolves it; DELIVERED is where receipts (and messages whose
#: sender wants no Zustellbestätigung) end.
SETTLED = frozenset({Status.DELIVERED, Status.ACKNOWLEDGED, Status.REJECTED, Status.DUPLICATE})
