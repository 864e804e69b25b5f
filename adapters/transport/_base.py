"""The one seam every transport implements, and the two values that cross it.

A transport moves *opaque* envelopes (bytes or a file of any size); it never parses them.

Delivery guarantees, the same for every adapter:

* **At least once, never lost.** ``receive()`` hands out deliveries that stay owned by the
  transport until ``acknowledge()`` (after the ledger commit) or ``release()``/``reject()``.
  A delivery neither acknowledged nor released (crash, ``close()``, lost connection) comes back
  from a later ``receive()``; duplicates are recognised downstream by envelope id (the ledger).
* **Idempotent sends.** ``send()`` may be repeated with the same ``envelope_id`` after any
  failure; each transport uses the id to avoid or mark duplicates (file name, Idempotency-Key,
  AMQP ``message_id``).
* **Streaming.** ``Outbound.open`` and ``Delivery.open`` give file objects; adapters copy in
  fixed-size chunks, so a 200 MB envelope takes constant memory.

Modelled on httpx's transport seam (one narrow protocol, a mock twin) and kombu's transports
(one module per transport, registered by URL scheme).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ClassVar, Protocol, Self, runtime_checkable

__all__ = ["CHUNK_SIZE", "Delivery", "Outbound", "Transport", "copy_stream"]

#: Copy unit for streaming envelopes (1 MiB: large enough for throughput, small for memory).
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class Outbound:
    """One envelope to send: either ``data`` (bytes) or ``open`` (a callable giving a stream).

    ``size`` is required with ``open`` (transports announce it: Content-Length, resume offsets,
    size limits). ``open`` may be called more than once (a retry re-reads from the start).
    """

    envelope_id: str
    recipient: str
    data: bytes | None = None
    open: Callable[[], BinaryIO] | None = field(default=None, repr=False)
    size: int = -1

    def __post_init__(self) -> None:
        if not self.envelope_id:
            raise ValueError("Outbound.envelope_id must not be empty")
        if (self.data is None) == (self.open is None):
            raise ValueError("Outbound needs exactly one of data= or open=")
        if self.data is not None:
            if self.size not in (-1, len(self.data)):
                raise ValueError("Outbound.size does not match len(data)")
            object.__setattr__(self, "size", len(self.data))
        elif self.size < 0:
            raise ValueError("Outbound.size is required with open=")

    @classmethod
    def from_file(cls, envelope_id: str, recipient: str, path: Path) -> Outbound:
        """An outbound envelope streamed from a file (e.g. an envelope with attachments)."""
        return cls(envelope_id=envelope_id, recipient=recipient,
                   open=lambda: path.open("rb"), size=path.stat().st_size)

    def stream(self) -> BinaryIO:
        """A fresh stream over the envelope, positioned at its start."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.open is not None
        return self.open()

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        with self.stream() as src:
            return src.read()


@dataclass(frozen=True)
class Delivery:
    """One received envelope, owned by the transport until acknowledged or released.

    ``delivery_id`` is unique per hand-out on this transport; ``envelope_id`` is what the
    transport knows of the envelope's id (file name, header, message id), or ``None``;
    ``peer`` is the authenticated identity of whoever handed it over (mTLS partner id, SFTP
    user), or ``None`` where the transport authenticates nobody (file drop, memory);
    ``redelivered`` says the transport has handed it out before (it may be a duplicate).
    """

    delivery_id: str
    envelope_id: str | None
    size: int
    peer: str | None
    transport: str
    opener: Callable[[], BinaryIO] = field(repr=False, compare=False)
    redelivered: bool = False

    def open(self) -> BinaryIO:
        """Stream the envelope (for large envelopes: read in chunks)."""
        return self.opener()

    def read(self) -> bytes:
        """The whole envelope in memory (fine for ordinary, small envelopes)."""
        with self.opener() as src:
            return src.read()


@runtime_checkable
class Transport(Protocol):
    """send / receive / acknowledge / release / reject / close; a context manager."""

    scheme: ClassVar[str]

    def send(self, item: Outbound) -> None:
        """Hand one envelope to the transport; idempotent by ``item.envelope_id``."""
        ...

    def send_many(self, items: Sequence[Outbound]) -> None:
        """Send several; transports that can (AMQP) confirm them together. On an error, any
        of them may or may not have been sent: repeat the batch (sends are idempotent)."""
        ...

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        """Up to ``max_items`` deliveries; waits up to ``timeout`` s for the first one."""
        ...

    def acknowledge(self, delivery: Delivery) -> None:
        """Done with it (call after the ledger commit): it will not come again."""
        ...

    def release(self, delivery: Delivery) -> None:
        """Give it back unprocessed: it will be delivered again."""
        ...

    def reject(self, delivery: Delivery, reason_code: str) -> None:
        """Unprocessable: park it (failed folder / dead-letter queue), never deliver again."""
        ...

    def close(self) -> None:
        """Release what is still held and free connections; idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class TransportBase:
    """Plumbing shared by the adapters (not part of the public seam)."""

    def send(self, item: Outbound) -> None:  # pragma: no cover - every adapter overrides
        raise NotImplementedError

    def send_many(self, items: Sequence[Outbound]) -> None:
        for item in items:
            self.send(item)

    def close(self) -> None:  # pragma: no cover - every adapter overrides
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def copy_stream(src: BinaryIO, dst: BinaryIO, *, limit: int | None = None) -> int:
    """Copy in ``CHUNK_SIZE`` pieces; returns the bytes copied (at most ``limit``)."""
    copied = 0
    while limit is None or copied < limit:
        want = CHUNK_SIZE if limit is None else min(CHUNK_SIZE, limit - copied)
        chunk = src.read(want)
        if not chunk:
            break
        dst.write(chunk)
        copied += len(chunk)
    return copied
