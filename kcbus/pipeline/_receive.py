"""Stage *receive*: a transport's deliveries → RECEIVED rows, then acknowledge the transport.

Invariant (DESIGN.md, "Message life cycle" 1): an envelope is in the ledger — committed,
raw bytes stored encrypted — *before* its transport is acknowledged. A crash in between makes
the transport deliver it again; the ledger recognises the same bytes (SHA-256, unique) and
stores nothing twice, and the redelivery is acknowledged. If the ledger cannot take a unit,
every delivery not yet acknowledged is released so it comes back.

Memory: a delivery above the transport's ``max_bytes`` is never read: it is parked in the
transport's failed place with reason ``envelope-too-large`` (so is one that grows beyond it
while it is read). Small deliveries (up to ``SPOOL_ABOVE``) are read into memory and stored
together, at most ``UNIT_BYTES`` per ledger unit; "small" is the announced size, which is
only the sender's word, so at most ``SPOOL_ABOVE`` + 1 bytes are read into memory and a
longer stream continues into a spool file. Larger ones are copied in chunks to a
temporary file in the runtime's scratch folder (constant memory while the transport is read;
the envelope ID is peeked from the file) and stored one per unit: the ledger hashes the file
and stores it in encrypted chunks (``NewEnvelope(stream=...)``), so the stage stays constant in
memory for any size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from adapters.envelope import Malformed, peek_envelope
from adapters.transport import (
    CHUNK_SIZE,
    Delivery,
    DeliveryTooLarge,
    Transport,
    TransportUnavailable,
)
from kcbus.ledger import NewEnvelope
from kcbus.pipeline._common import StageCounts
from kcbus.pipeline._runtime import Runtime
from xoev import TransientFault

__all__ = ["SPOOL_ABOVE", "UNIT_BYTES", "ScratchUnavailable", "receive_batch"]

log = logging.getLogger(__name__)

#: Deliveries larger than this (or of unknown size) go through a scratch file.
SPOOL_ABOVE = 8 << 20
#: In-memory deliveries are stored in ledger units of at most about this many bytes.
UNIT_BYTES = 64 << 20


class ScratchUnavailable(TransientFault):
    """The scratch folder cannot take a delivery (disk full, permissions): our side, not the
    partner's; the batch is released and comes again."""

    reason_code = "scratch-unavailable"


@dataclass
class _Taken:
    """One delivery, read: its bytes in memory, or a spool file positioned at the start."""

    delivery: Delivery
    envelope_id: str | None
    data: bytes | None = None
    spool: BinaryIO | None = None
    #: The spool file's length: what was read, not what was announced.
    length: int = -1

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.length

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def receive_batch(
    rt: Runtime,
    transport: Transport,
    max_items: int,
    *,
    timeout: float = 0.0,
    source: str | None = None,
) -> StageCounts:
    counts = StageCounts()
    deliveries = transport.receive(max_items, timeout)
    settled: set[str] = set()  # acknowledged or parked: not to be released
    group: list[_Taken] = []
    try:
        group_bytes = 0
        for delivery in deliveries:
            taken = _take(rt, transport, delivery, counts)
            if taken is None:
                settled.add(delivery.delivery_id)
                continue
            if taken.spool is not None:
                _store(rt, transport, [taken], source, counts, settled)
                continue
            group.append(taken)
            group_bytes += taken.size
            if group_bytes >= UNIT_BYTES:
                _store(rt, transport, group, source, counts, settled)
                group, group_bytes = [], 0
        _store(rt, transport, group, source, counts, settled)
    except BaseException:
        for delivery in deliveries:
            if delivery.delivery_id not in settled:
                # If even this fails, the transport redelivers unacknowledged items anyway.
                with contextlib.suppress(Exception):
                    transport.release(delivery)
        raise
    finally:
        for taken in group:
            taken.close()
    return counts


def _take(
    rt: Runtime, transport: Transport, delivery: Delivery, counts: StageCounts
) -> _Taken | None:
    """Read one delivery; park it (and return ``None``) if it is too large or cannot be read
    as what it claims to be.

    A drop-folder file swapped for a symlink or a folder after listing (the file adapters
    refuse to follow it) would otherwise fail the whole batch on every pass; so would an
    envelope above the transport's limit. They go to the transport's failed place (nothing is
    lost; an operator sees them); the others go on. Connection losses are not this: they
    propagate, and the batch is released for a retry.
    """
    try:
        if delivery.too_large:
            raise DeliveryTooLarge(
                transport=delivery.transport,
                delivery_id=delivery.delivery_id,
                size=delivery.size,
                limit=delivery.max_bytes or 0,
            )
        if 0 <= delivery.size <= SPOOL_ABOVE:
            taken = _read_small(rt, delivery)
            if taken.data is not None:
                return taken
            spool = taken.spool
        else:
            spool = _spool(rt, delivery)
        assert spool is not None
        try:
            envelope_id = _envelope_id(delivery, spool)
            length = spool.seek(0, os.SEEK_END)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return _Taken(delivery, envelope_id, spool=spool, length=length)
    except DeliveryTooLarge as exc:
        log.warning(
            "receive: %s delivery %s is larger than %d bytes (%d seen); parked",
            delivery.transport,
            delivery.delivery_id,
            exc.limit,
            exc.size,
        )
        _park(transport, delivery, exc.reason_code, counts)
    except (ConnectionError, TimeoutError, TransportUnavailable, ScratchUnavailable):
        raise
    except OSError as exc:
        log.warning(
            "receive: %s delivery %s cannot be read (errno %s); parked",
            delivery.transport,
            delivery.delivery_id,
            exc.errno,
        )
        _park(transport, delivery, "unreadable-delivery", counts)
    return None


def _park(transport: Transport, delivery: Delivery, reason_code: str, counts: StageCounts) -> None:
    transport.reject(delivery, reason_code)
    counts.rejected += 1


def _read_small(rt: Runtime, delivery: Delivery) -> _Taken:
    """Read a delivery announced as small into memory — but never more than ``SPOOL_ABOVE``
    bytes of it: the announced size is the sender's word (an AMQP claim's size, a file listed
    before it grew), so a stream that turns out longer goes on into a spool file, and memory
    stays bounded by the threshold whatever the stream holds."""
    with delivery.open() as src:
        # The announced size plus one byte in one read (one buffer for the common case; the
        # extra byte tells a longer stream), then up to the threshold in chunks.
        first = src.read(delivery.size + 1)
        if len(first) <= delivery.size:
            return _Taken(delivery, _envelope_id(delivery, first), data=first)
        parts, total = [first], len(first)
        del first
        while total <= SPOOL_ABOVE:
            chunk = src.read(min(CHUNK_SIZE, SPOOL_ABOVE + 1 - total))
            if not chunk:
                data = b"".join(parts)
                return _Taken(delivery, _envelope_id(delivery, data), data=data)
            parts.append(chunk)
            total += len(chunk)
        return _Taken(delivery, None, spool=_spool(rt, delivery, src, parts))


def _spool(
    rt: Runtime, delivery: Delivery, src: BinaryIO | None = None, head: list[bytes] | None = None
) -> BinaryIO:
    """Copy a delivery in chunks into an anonymous file in scratch (gone when closed): the
    ``head`` already read from ``src`` first (emptied as it is written), then the rest of
    ``src`` (default: the delivery opened afresh).

    Errors of the scratch side become :class:`ScratchUnavailable`, so that only errors of
    reading the delivery count against it."""
    try:
        if rt.scratch is not None:
            os.makedirs(rt.scratch, exist_ok=True)
        spool = tempfile.TemporaryFile(prefix="kcbus-receive-", dir=rt.scratch)  # noqa: SIM115 - closed by _Taken
    except OSError as exc:
        raise ScratchUnavailable(f"scratch folder unusable (errno {exc.errno})") from exc

    def write(chunk: bytes) -> None:
        try:
            spool.write(chunk)
        except OSError as exc:
            raise ScratchUnavailable(
                f"scratch folder cannot take {delivery.delivery_id} (errno {exc.errno})"
            ) from exc

    try:
        while head:
            write(head.pop(0))
        with contextlib.nullcontext(src) if src is not None else delivery.open() as stream:
            while chunk := stream.read(CHUNK_SIZE):
                write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _envelope_id(delivery: Delivery, source: bytes | BinaryIO) -> str | None:
    try:
        return peek_envelope(source).envelope_id or delivery.envelope_id
    except Malformed:
        return delivery.envelope_id


def _store(
    rt: Runtime,
    transport: Transport,
    taken: Sequence[_Taken],
    source: str | None,
    counts: StageCounts,
    settled: set[str],
) -> None:
    """One ledger unit for ``taken``, then acknowledge each (the ledger commit comes first)."""
    if not taken:
        return
    try:
        items = [
            NewEnvelope(
                data=each.data,
                envelope_id=each.envelope_id,
                source=source or each.delivery.transport,
                peer=each.delivery.peer,
                stream=each.spool,  # read in chunks by the ledger (hash, then store)
                size=each.size,
            )
            for each in taken
        ]
        with rt.ledger.unit(actor=rt.actor, now=rt.now()) as unit:
            ids = unit.receive(items)
    finally:
        for each in taken:
            each.close()
    for each in taken:
        transport.acknowledge(each.delivery)
        settled.add(each.delivery.delivery_id)
    counts.received += sum(1 for i in ids if i is not None)
