"""Partner registry and route table: ``kcbus.config.load(path) -> BusConfig``.

See :mod:`kcbus.config._load` for the file format; every error names file, line and field,
and never shows a URL's password or secret query values (:func:`redact_url`).
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
from kcbus.config._redact import redact_url, redact_urls, url_has_secret

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
    "redact_url",
    "redact_urls",
    "url_has_secret",
]
