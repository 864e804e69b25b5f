"""kcbus receipts: Eingangsbestätigung, Rückweisung, Zustellbestätigung (``kcbus-quittung`` 1.0).

Schema and code lists live in ``kcbus/receipts/schemas/``; every receipt is validated before it
leaves (:class:`ReceiptBuilder`) and is sealed and delivered like any message by the pipeline.
"""

from __future__ import annotations

from kcbus.receipts._build import (
    NAMESPACE,
    STANDARD,
    VERSION,
    Addressee,
    Fault,
    Handover,
    Receipt,
    ReceiptBuilder,
    ReceiptType,
    Reference,
    read_receipt,
    redact,
)
from kcbus.receipts._codes import SCHEMA_DIR, reason_codes, sendable_reason

__all__ = [
    "NAMESPACE",
    "SCHEMA_DIR",
    "STANDARD",
    "VERSION",
    "Addressee",
    "Fault",
    "Handover",
    "Receipt",
    "ReceiptBuilder",
    "ReceiptType",
    "Reference",
    "read_receipt",
    "reason_codes",
    "redact",
    "sendable_reason",
]
