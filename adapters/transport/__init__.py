"""adapters.transport — move sealed envelopes over the transports partners run.

``connect(url, **options)`` opens a :class:`Transport` by URL scheme (``memory``, ``file``,
``sftp``, ``https``, ``amqp``/``amqps``, ``kombu+memory``, ``kombu+filesystem``); each
transport's module docstring is its spec (features, URL form, options with defaults, which errors
are recoverable). Transports move opaque bytes; they never parse envelopes.

    with connect("file:///srv/kcbus/drop/gemeinde-a") as inbox:
        for delivery in inbox.receive(100):
            ledger.store(delivery.read())      # commit first ...
            inbox.acknowledge(delivery)        # ... then acknowledge
"""

from __future__ import annotations

from adapters.transport._base import CHUNK_SIZE, Delivery, Outbound, Transport
from adapters.transport._errors import (
    AcknowledgeLost,
    DeliveryRefused,
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
    "TRANSPORTS",
    "AcknowledgeLost",
    "Delivery",
    "DeliveryRefused",
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
