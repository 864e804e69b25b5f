"""adapters.transport — move sealed envelopes over the transports partners run.

``connect(url, **options)`` opens a :class:`Transport` by URL scheme (``memory``, ``file``,
``sftp``, ``https``, ``amqp``/``amqps``, ``kombu+memory``, ``kombu+filesystem``); each
transport's module docstring is its spec (features, URL form, options with defaults, which errors
are recoverable). Transports move opaque bytes; they never parse envelopes. Every inbound
transport takes ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, 2 GiB): a larger delivery is
handed out ``too_large``, refuses to be read (:class:`DeliveryTooLarge`), and is parked with
``reject(delivery, "envelope-too-large")``.

    with connect("file:///srv/kcbus/drop/gemeinde-a") as inbox:
        for delivery in inbox.receive(100):
            ledger.store(delivery.read())      # commit first ...
            inbox.acknowledge(delivery)        # ... then acknowledge
"""

from __future__ import annotations

from adapters.transport._base import (
    CHUNK_SIZE,
    DEFAULT_MAX_BYTES,
    Delivery,
    Outbound,
    Transport,
)
from adapters.transport._errors import (
    AcknowledgeLost,
    DeliveryRefused,
    DeliveryTooLarge,
    EnvelopeTooLarge,
    NoSuchTransport,
    PeerBusy,
    TransportConfigError,
    TransportError,
    TransportUnavailable,
    UnknownDelivery,
)
from adapters.transport._registry import TRANSPORTS, connect, register

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_BYTES",
    "TRANSPORTS",
    "AcknowledgeLost",
    "Delivery",
    "DeliveryRefused",
    "DeliveryTooLarge",
    "EnvelopeTooLarge",
    "NoSuchTransport",
    "Outbound",
    "PeerBusy",
    "Transport",
    "TransportConfigError",
    "TransportError",
    "TransportUnavailable",
    "UnknownDelivery",
    "connect",
    "register",
]
