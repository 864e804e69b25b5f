"""The one exception tree of kcbus.

Every error kcbus raises derives from :class:`KcbusError`. The tree is split twice:
by fault (the partner's, ours/configuration, or the environment's) and by whether a retry can help.
Code branches on these types and attributes, never on message text.

    KcbusError                      reason_code, retryable, partner_fault
    ├── PartnerFault                the partner sent something wrong; becomes a Rückweisung
    │                               (rejection receipt) with ``reason_code``; retrying never helps
    ├── TransientFault              network, broker, timeouts: a retry may help
    └── ConfigurationError          ours: bad config, missing schema or key; an operator must act

Error texts carry IDs, types, partners, counts, line numbers and XPaths, never message content
or personal data: they end up in logs, XComs and the operator UI.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["ConfigurationError", "KcbusError", "PartnerFault", "TransientFault"]


class KcbusError(Exception):
    """Root of every kcbus error."""

    #: Code from kcbus's rejection-reason code list (schemas/), used in receipts.
    reason_code: ClassVar[str] = "internal"
    #: Whether repeating the same operation later may succeed.
    retryable: ClassVar[bool] = False
    #: Whether the partner caused it (and so gets a rejection receipt).
    partner_fault: ClassVar[bool] = False


class PartnerFault(KcbusError):
    """The partner's input is wrong; never retryable."""

    reason_code = "partner"
    partner_fault = True


class TransientFault(KcbusError):
    """A passing failure of the environment; retryable."""

    reason_code = "transient"
    retryable = True


class ConfigurationError(KcbusError):
    """kcbus is configured wrongly (missing schema, key, bad config file)."""

    reason_code = "configuration"
