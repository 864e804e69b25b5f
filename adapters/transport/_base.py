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
  fixed-size chunks, so a 200 MB envelope takes constant memory. ``Delivery.spool`` copies a
  delivery into a temporary file (in memory below a threshold) for callers that need to read
  it more than once.
* **Size limit.** Every inbound transport has ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`,
  URL option ``?max_bytes=``). A delivery whose announced size is above it is handed out with
  ``too_large`` set and refuses to be opened; one that turns out larger while it is read (a
  file that grew after it was listed) stops at the limit. Both raise
  :class:`~adapters.transport.DeliveryTooLarge`; the caller parks the delivery with
  ``reject(delivery, "envelope-too-large")`` and goes on with the batch.

Modelled on httpx's transport seam (one narrow protocol, a mock twin) and kombu's transports
(one module per transport, registered by URL scheme).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ClassVar, Protocol, Self, cast, runtime_checkable

from adapters.transport._errors import DeliveryTooLarge

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_BYTES",
    "SPOOL_IN_MEMORY",
    "Delivery",
    "Outbound",
    "Transport",
    "copy_stream",
]

#: Copy unit for streaming envelopes (1 MiB: large enough for throughput, small for memory).
CHUNK_SIZE = 1 << 20
#: Largest inbound envelope a transport hands out to be read unless told otherwise (2 GiB:
#: above the largest Bauantrag with plans seen, far below what fills a worker's disk).
DEFAULT_MAX_BYTES = 2 << 30
#: ``Delivery.spool`` keeps envelopes up to this size in memory, larger ones in a file.
SPOOL_IN_MEMORY = 8 << 20


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
        return cls(
            envelope_id=envelope_id,
            recipient=recipient,
            open=lambda: path.open("rb"),
            size=path.stat().st_size,
        )

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
    ``redelivered`` says the transport has handed it out before (it may be a duplicate);
    ``max_bytes`` is the transport's size limit (``None``: none), which every read enforces.
    """

    delivery_id: str
    envelope_id: str | None
    size: int
    peer: str | None
    transport: str
    opener: Callable[[], BinaryIO] = field(repr=False, compare=False)
    redelivered: bool = False
    max_bytes: int | None = None

    @property
    def too_large(self) -> bool:
        """The announced size is above ``max_bytes``: park it, do not read it."""
        return self.max_bytes is not None and self.size > self.max_bytes

    def _refuse(self, size: int) -> DeliveryTooLarge:
        assert self.max_bytes is not None
        return DeliveryTooLarge(
            transport=self.transport, delivery_id=self.delivery_id, size=size, limit=self.max_bytes
        )

    def open(self) -> BinaryIO:
        """Stream the envelope (for large envelopes: read in chunks). Raises
        :class:`DeliveryTooLarge` at once if ``too_large``, or from a read that would go
        beyond ``max_bytes``."""
        if self.max_bytes is None:
            return self.opener()
        if self.too_large:
            raise self._refuse(self.size)
        capped = _Capped(self.opener(), self.max_bytes, self.size, self._refuse)
        return cast(BinaryIO, io.BufferedReader(capped, buffer_size=CHUNK_SIZE))

    def read(self) -> bytes:
        """The whole envelope in memory (fine for ordinary, small envelopes)."""
        with self.open() as src:
            return src.read()

    def spool(self, directory: Path | None = None, *, in_memory: int = SPOOL_IN_MEMORY) -> BinaryIO:
        """Copy the envelope in ``CHUNK_SIZE`` pieces into a temporary file in ``directory``
        (default: the system's) and return it positioned at the start; envelopes up to
        ``in_memory`` bytes stay in memory. The file is deleted when closed. Limits as for
        :meth:`open`."""
        spooled = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - handed to the caller
            max_size=in_memory,
            mode="w+b",
            prefix="kcbus-delivery-",
            dir=str(directory) if directory is not None else None,
        )
        try:
            if self.size > in_memory:
                spooled.rollover()  # straight to disk, no detour through memory
            with self.open() as src:
                copy_stream(src, cast(BinaryIO, spooled))
            spooled.seek(0)
        except BaseException:
            spooled.close()
            raise
        return cast(BinaryIO, spooled)


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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


class _Capped(io.RawIOBase):
    """Reads ``inner`` but never hands out a byte beyond offset ``limit``: one byte more is
    asked for to notice a longer stream, which then raises (from ``refuse(bytes seen)``).

    Offsets count from where ``inner`` stood when wrapped (a spool file's header comes
    before it). ``expected`` (the announced size) lets :meth:`readall` read in one piece.
    """

    def __init__(
        self, inner: BinaryIO, limit: int, expected: int, refuse: Callable[[int], BaseException]
    ) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._expected = expected
        self._refuse = refuse
        self._base = inner.tell() if inner.seekable() else 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._inner.seekable()

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self._base
        self._pos = self._inner.seek(offset, whence) - self._base
        return self._pos

    def _allowed(self, want: int) -> int:
        """How many bytes to ask ``inner`` for: at most one beyond the limit."""
        return max(1, min(want, self._limit - self._pos + 1))

    def _took(self, got: int) -> int:
        if self._pos + got > self._limit:
            raise self._refuse(self._pos + got)
        self._pos += got
        return got

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = self._allowed(len(view))
        data = self._inner.read(want)
        self._took(len(data))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        data = self._inner.read(self._allowed(size)) if size else b""
        self._took(len(data))
        return data

    def readall(self) -> bytes:
        # the announced size in one read (one copy, like a plain file's read()), then
        # whatever follows up to the limit (rare: the file grew, or the announced size was
        # only the sender's word) into one growing buffer: chunks joined at the end held the
        # envelope two or three times over. Callers that must bound memory read in pieces
        # (the receive stage reads at most its spool threshold).
        first = self.read(min(self._expected, self._limit)) if self._expected > 0 else b""
        chunk = self.read(CHUNK_SIZE)
        if not chunk:
            return first
        grown = io.BytesIO(first)  # shares ``first``'s buffer until written
        del first
        grown.seek(0, io.SEEK_END)
        while chunk:
            grown.write(chunk)
            chunk = self.read(CHUNK_SIZE)
        return grown.getvalue()  # hands over the buffer, no copy

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()
