"""Errors of the transport adapters, translated at the edge from driver errors.

Every adapter raises only these (``raise ... from exc`` keeps the driver's error as the cause).
Each class sits in the one kcbus tree (:mod:`xoev._errors`), so callers branch on the fault
class, never on text::

    TransportError                        transport (scheme), endpoint (credential-free)
    ├── TransportUnavailable  Transient   connection refused/dropped, broker down, timeouts
    │   └── AcknowledgeLost   Transient   ack/release could not reach the server: the item will
    │                                     be delivered again (the ledger recognises it)
    ├── PeerBusy              Transient   the peer asked to slow down (HTTP 429/503); retry_after
    ├── DeliveryRefused       Partner     the peer refused the envelope for good (HTTP 4xx)
    ├── DeliveryTooLarge      Partner     an inbound envelope above the transport's
    │                                     ``max_bytes``: park it (reason_code), never read it
    ├── EnvelopeTooLarge      Config      above the transport's size limit and no claim check
    │                                     configured (size, limit)
    ├── TransportConfigError  Config      bad URL/options, missing key file, unknown host key,
    │                                     login refused: an operator must act
    │   └── NoSuchTransport   Config      unknown URL scheme, with a suggestion
    └── UnknownDelivery       Config      acknowledge/release of a delivery this transport did
                                          not hand out (a programming error)

Texts carry schemes, endpoints without credentials, ids, sizes and status codes, never
envelope content.
"""

from __future__ import annotations

from xoev import ConfigurationError, KcbusError, PartnerFault, TransientFault

__all__ = [
    "AcknowledgeLost",
    "DeliveryRefused",
    "DeliveryTooLarge",
    "EnvelopeTooLarge",
    "NoSuchTransport",
    "PeerBusy",
    "TransportConfigError",
    "TransportError",
    "TransportUnavailable",
    "UnknownDelivery",
]


class TransportError(KcbusError):
    """Base of every transport error; ``transport`` is the URL scheme."""

    def __init__(self, message: str, *, transport: str, endpoint: str | None = None) -> None:
        super().__init__(f"{transport}: {message}")
        self.transport = transport
        self.endpoint = endpoint


class TransportUnavailable(TransportError, TransientFault):
    """The server or peer cannot be reached right now; retrying later may succeed."""

    reason_code = "transport-unavailable"


class AcknowledgeLost(TransportUnavailable):
    """The acknowledgement did not reach the server; the item will come again."""

    reason_code = "acknowledge-lost"

    def __init__(
        self, message: str, *, transport: str, delivery_id: str, endpoint: str | None = None
    ) -> None:
        super().__init__(message, transport=transport, endpoint=endpoint)
        self.delivery_id = delivery_id


class PeerBusy(TransportError, TransientFault):
    """The peer is overloaded (HTTP 429 / 503); ``retry_after`` seconds if it said so."""

    reason_code = "peer-busy"

    def __init__(
        self,
        message: str,
        *,
        transport: str,
        endpoint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, transport=transport, endpoint=endpoint)
        self.status = status
        self.retry_after = retry_after


class DeliveryRefused(TransportError, PartnerFault):
    """The peer refused the envelope for good; sending it again will not help."""

    reason_code = "delivery-refused"

    def __init__(
        self,
        message: str,
        *,
        transport: str,
        endpoint: str | None = None,
        status: int | None = None,
        peer_reason: str | None = None,
    ) -> None:
        super().__init__(message, transport=transport, endpoint=endpoint)
        self.status = status
        self.peer_reason = peer_reason


class DeliveryTooLarge(TransportError, PartnerFault):
    """An inbound envelope exceeds the transport's ``max_bytes`` (known before reading, or
    noticed while reading: a file that grew after it was listed). Nothing more is read; the
    caller parks the delivery with ``reject(delivery, DeliveryTooLarge.reason_code)``.

    ``size`` is the size announced before reading, or the bytes read when the limit broke.
    """

    reason_code = "envelope-too-large"

    def __init__(self, *, transport: str, delivery_id: str, size: int, limit: int) -> None:
        super().__init__(
            f"delivery {delivery_id}: more than {limit} bytes ({size} seen)", transport=transport
        )
        self.delivery_id = delivery_id
        self.size = size
        self.limit = limit


class EnvelopeTooLarge(TransportError, ConfigurationError):
    """The envelope exceeds what this transport moves in one piece."""

    reason_code = "too-large"

    def __init__(
        self, *, transport: str, size: int, limit: int, endpoint: str | None = None
    ) -> None:
        super().__init__(
            f"envelope of {size} bytes exceeds the limit of {limit} bytes "
            "(configure a claim check or route the partner over file drop/SFTP/HTTPS)",
            transport=transport,
            endpoint=endpoint,
        )
        self.size = size
        self.limit = limit


class TransportConfigError(TransportError, ConfigurationError):
    """The transport is configured wrongly (URL, option, key, host key, credentials)."""

    reason_code = "configuration"

    def __init__(
        self,
        message: str,
        *,
        transport: str,
        endpoint: str | None = None,
        option: str | None = None,
    ) -> None:
        super().__init__(message, transport=transport, endpoint=endpoint)
        self.option = option


class NoSuchTransport(TransportConfigError):
    """No transport is registered for the URL scheme."""

    def __init__(self, scheme: str, suggestion: str | None) -> None:
        hint = f", did you mean {suggestion}?" if suggestion else ""
        super().__init__(f"no such transport: {scheme}{hint}", transport=scheme)
        self.args = (f"no such transport: {scheme}{hint}",)  # no "scheme: " prefix here
        self.scheme = scheme
        self.suggestion = suggestion


class UnknownDelivery(TransportError, ConfigurationError):
    """A delivery was acknowledged/released twice or on a transport that did not make it."""

    def __init__(self, *, transport: str, delivery_id: str) -> None:
        super().__init__(
            f"delivery {delivery_id} is not open on this transport", transport=transport
        )
        self.delivery_id = delivery_id
