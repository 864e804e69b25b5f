"""``memory://`` — the in-process twin of every transport (unit tests, the runtime's tests).

Features: one named in-process broker per URL host (``memory://ledger-test`` and a second
``connect()`` to the same URL share queues), one FIFO queue per recipient, the full delivery
contract of :mod:`adapters.transport._base` (in-flight until acknowledged, ``release()`` and
``close()`` give unacknowledged deliveries back at the head of their queue flagged
``redelivered``, ``reject()`` parks them in a dead-letter list), idempotent ``send()`` (an
envelope id already queued or in flight for that recipient is not queued again), and
constant memory for large envelopes (above ``spool_threshold`` they live in a temporary file).

URL: ``memory://[name][?inbox=<partner>]``; no name = the broker ``default``.

Options (defaults):

``inbox`` (none)
    the recipient whose queue ``receive()`` takes from; none = every queue, oldest first.
``peer`` (none)
    the identity this connection authenticates as; deliveries of what it sends carry it as
    ``Delivery.peer`` (stands in for an mTLS subject or SFTP user in tests).
``max_size`` (0 = unlimited)
    larger envelopes raise :class:`EnvelopeTooLarge` on ``send()`` (to mimic a broker limit).
``max_bytes`` (2 GiB)
    largest envelope ``receive()`` hands out to be read; larger ones come out ``too_large``
    and refuse to be read (:class:`DeliveryTooLarge`); ``reject()`` parks them in ``dead``.
``spool_threshold`` (1 MiB)
    envelopes above this are kept in a temporary file instead of memory.

Errors: only :class:`EnvelopeTooLarge`, :class:`DeliveryTooLarge` and
:class:`UnknownDelivery`; nothing here is recoverable because nothing here can fail
transiently.
"""

from __future__ import annotations

import atexit
import io
import itertools
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar
from urllib.parse import urlsplit

from adapters.transport._base import (
    DEFAULT_MAX_BYTES,
    Delivery,
    Outbound,
    TransportBase,
    copy_stream,
)
from adapters.transport._errors import EnvelopeTooLarge, UnknownDelivery
from adapters.transport._options import Options, merge_query

__all__ = ["MemoryBroker", "MemoryTransport", "broker"]


_arrival = itertools.count()  # global arrival order, so "oldest first" spans queues


@dataclass
class _Item:
    envelope_id: str
    recipient: str
    size: int
    peer: str | None
    data: bytes | None = None
    path: Path | None = None
    handed_out: int = 0
    seq: int = field(default_factory=lambda: next(_arrival))

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class MemoryBroker:
    """The shared state behind one ``memory://name``; inspect it in tests."""

    name: str
    queues: dict[str, deque[_Item]] = field(default_factory=dict)
    in_flight: dict[str, _Item] = field(default_factory=dict)
    dead: list[tuple[str, str, str]] = field(default_factory=list)  # (recipient, id, reason)
    condition: threading.Condition = field(default_factory=threading.Condition)
    #: (recipient, envelope id) of every item queued or in flight, with how many: what makes
    #: ``send()`` idempotent in O(1) instead of a scan of the queue (O(N²) for a batch).
    known: dict[tuple[str, str], int] = field(default_factory=dict)

    def _add_known(self, item: _Item) -> None:
        key = (item.recipient, item.envelope_id)
        self.known[key] = self.known.get(key, 0) + 1

    def _drop_known(self, item: _Item) -> None:
        key = (item.recipient, item.envelope_id)
        left = self.known.get(key, 0) - 1
        if left > 0:
            self.known[key] = left
        else:
            self.known.pop(key, None)

    def pending(self, recipient: str | None = None) -> int:
        """Items waiting (not in flight) for ``recipient`` or for everybody."""
        with self.condition:
            if recipient is not None:
                return len(self.queues.get(recipient, ()))
            return sum(len(q) for q in self.queues.values())

    def clear(self) -> None:
        with self.condition:
            for queue in self.queues.values():
                for item in queue:
                    item.discard()
            for item in self.in_flight.values():
                item.discard()
            self.queues.clear()
            self.in_flight.clear()
            self.dead.clear()
            self.known.clear()


_brokers: dict[str, MemoryBroker] = {}
_brokers_lock = threading.Lock()
_ids = itertools.count(1)


@atexit.register
def _discard_spooled() -> None:
    # large envelopes live in temporary files: do not leave them behind with the process
    for each in list(_brokers.values()):
        each.clear()


def broker(name: str = "default") -> MemoryBroker:
    """The in-process broker called ``name`` (created on first use)."""
    with _brokers_lock:
        if name not in _brokers:
            _brokers[name] = MemoryBroker(name)
        return _brokers[name]


class MemoryTransport(TransportBase):
    """In-process transport; see the module docstring for URL and options."""

    scheme: ClassVar[str] = "memory"

    def __init__(
        self,
        name: str = "default",
        *,
        inbox: str | None = None,
        peer: str | None = None,
        max_size: int = 0,
        spool_threshold: int = 1 << 20,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.broker = broker(name or "default")
        self.inbox = inbox
        self.peer = peer
        self.max_size = max_size
        self.spool_threshold = spool_threshold
        self.max_bytes = max_bytes
        self._held: dict[str, _Item] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: object) -> MemoryTransport:
        opts = Options(cls.scheme, merge_query(url, options))
        transport = cls(
            urlsplit(url).netloc or "default",
            inbox=opts.optional_text("inbox"),
            peer=opts.optional_text("peer"),
            max_size=opts.integer("max_size", 0, minimum=0),
            spool_threshold=opts.integer("spool_threshold", 1 << 20, minimum=0),
            max_bytes=opts.integer("max_bytes", DEFAULT_MAX_BYTES, minimum=1),
        )
        opts.done()
        return transport

    # -- sending ---------------------------------------------------------------------------

    def send(self, item: Outbound) -> None:
        if self.max_size and item.size > self.max_size:
            raise EnvelopeTooLarge(transport=self.scheme, size=item.size, limit=self.max_size)
        with self.broker.condition:
            if self._known(item.recipient, item.envelope_id):
                return
        stored = _Item(item.envelope_id, item.recipient, item.size, self.peer)
        if item.size > self.spool_threshold:
            fd, name = tempfile.mkstemp(prefix="kcbus-memory-")
            with os.fdopen(fd, "wb") as out, item.stream() as src:
                copy_stream(src, out)
            stored.path = Path(name)
        else:
            stored.data = item.read()
        with self.broker.condition:
            if self._known(item.recipient, item.envelope_id):  # a racing twin send won
                stored.discard()
                return
            self.broker.queues.setdefault(item.recipient, deque()).append(stored)
            self.broker._add_known(stored)
            self.broker.condition.notify_all()

    def _known(self, recipient: str, envelope_id: str) -> bool:
        return (recipient, envelope_id) in self.broker.known

    # -- receiving -------------------------------------------------------------------------

    def _queues(self) -> list[deque[_Item]]:
        if self.inbox is not None:
            return [self.broker.queues.setdefault(self.inbox, deque())]
        return list(self.broker.queues.values())

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        out: list[Delivery] = []
        with self.broker.condition:
            while not any(self._queues()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return out
                self.broker.condition.wait(remaining)
            while len(out) < max_items:
                queues = [q for q in self._queues() if q]
                if not queues:
                    break
                # oldest first across recipients: queues keep arrival order, so compare heads
                item = min(queues, key=lambda q: q[0].seq)[0]
                for q in queues:
                    if q and q[0] is item:
                        q.popleft()
                        break
                delivery_id = f"{self.broker.name}:{next(_ids)}"
                item.handed_out += 1
                self.broker.in_flight[delivery_id] = item
                self._held[delivery_id] = item
                out.append(
                    Delivery(
                        delivery_id=delivery_id,
                        envelope_id=item.envelope_id,
                        size=item.size,
                        peer=item.peer,
                        transport=self.scheme,
                        opener=item.open,
                        redelivered=item.handed_out > 1,
                        max_bytes=self.max_bytes,
                    )
                )
        return out

    def _take(self, delivery: Delivery) -> _Item:
        item = self._held.pop(delivery.delivery_id, None)
        if item is None:
            raise UnknownDelivery(transport=self.scheme, delivery_id=delivery.delivery_id)
        self.broker.in_flight.pop(delivery.delivery_id, None)
        return item

    def acknowledge(self, delivery: Delivery) -> None:
        with self.broker.condition:
            item = self._take(delivery)
            self.broker._drop_known(item)
        item.discard()

    def release(self, delivery: Delivery) -> None:
        with self.broker.condition:
            item = self._take(delivery)
            self.broker.queues.setdefault(item.recipient, deque()).appendleft(item)
            self.broker.condition.notify_all()

    def reject(self, delivery: Delivery, reason_code: str) -> None:
        with self.broker.condition:
            item = self._take(delivery)
            self.broker._drop_known(item)
            self.broker.dead.append((item.recipient, item.envelope_id, reason_code))
        item.discard()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self.broker.condition:
            # give back in reverse so the queue head keeps the original order
            for delivery_id in reversed(list(self._held)):
                item = self._held.pop(delivery_id)
                self.broker.in_flight.pop(delivery_id, None)
                self.broker.queues.setdefault(item.recipient, deque()).appendleft(item)
            self.broker.condition.notify_all()
