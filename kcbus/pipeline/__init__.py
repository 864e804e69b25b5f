"""The pipeline: receive → open → validate → route → seal → deliver → acknowledge.

Each stage is a plain function over one batch — ``stage(runtime, limit) -> StageCounts`` —
running in one ledger transaction (see :mod:`kcbus.ledger._unit`), idempotent: run it again
after a crash at any point and nothing is lost or done twice. :class:`kcbus.bus.Bus` strings
them together for callers (Airflow tasks, the demo, tests).
"""

from __future__ import annotations

from kcbus.pipeline._common import Facts, StageCounts
from kcbus.pipeline._deliver import DELIVERY_FAILED, deliver_batch, seal_batch, seal_new
from kcbus.pipeline._open import open_batch, open_rows
from kcbus.pipeline._receive import receive_batch
from kcbus.pipeline._route import route_batch, route_rows
from kcbus.pipeline._runtime import Runtime, default_actor, utcnow
from kcbus.pipeline._validate import validate_batch, validate_rows

__all__ = [
    "DELIVERY_FAILED",
    "Facts",
    "Runtime",
    "StageCounts",
    "default_actor",
    "deliver_batch",
    "open_batch",
    "open_rows",
    "receive_batch",
    "route_batch",
    "route_rows",
    "seal_batch",
    "seal_new",
    "utcnow",
    "validate_batch",
    "validate_rows",
]
