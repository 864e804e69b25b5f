"""Partner registry and route table: ``kcbus.config.load(path) -> BusConfig``.

See :mod:`kcbus.config._load` for the file format; every error names file, line and field.
"""

from __future__ import annotations

from kcbus.config._load import load
from kcbus.config._model import (
    READER,
    Address,
    BusConfig,
    BusSettings,
    Inspection,
    Partner,
    Profile,
    ReceiptKind,
    RetryPolicy,
    Route,
    RouteMatch,
)

__all__ = [
    "READER",
    "Address",
    "BusConfig",
    "BusSettings",
    "Inspection",
    "Partner",
    "Profile",
    "ReceiptKind",
    "RetryPolicy",
    "Route",
    "RouteMatch",
    "load",
]
