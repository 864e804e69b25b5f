"""Inbound size limits (``max_bytes``) and reading deliveries without holding them whole.

The scenario suite checks the limit known before reading on every transport; here: a file
that grows beyond the limit after it was listed (drop folders, SFTP, the HTTPS spool), and
the reading side of :class:`Delivery` (exact limits, offsets, spooling).
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from adapters.transport import (
    DEFAULT_MAX_BYTES,
    Delivery,
    DeliveryTooLarge,
    Outbound,
    TransportConfigError,
    connect,
)
from tests.adapters.transport.conftest import Endpoint, fake_envelope, make_endpoint

GROWERS = ["file", pytest.param("sftp", marks=pytest.mark.real),
           pytest.param("https", marks=pytest.mark.real)]


def _delivery(data: bytes, *, max_bytes: int | None, size: int | None = None,
              skip: int = 0) -> Delivery:
    def opener() -> io.BytesIO:
        stream = io.BytesIO(data)
        stream.seek(skip)
        return stream

    return Delivery(delivery_id="d-1", envelope_id=None,
                    size=len(data) - skip if size is None else size, peer=None,
                    transport="test", opener=opener, max_bytes=max_bytes)


@pytest.mark.parametrize("name", GROWERS)
def test_a_file_that_grows_beyond_the_limit_after_listing_stops_at_the_limit(
        name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    endpoint: Endpoint = make_endpoint(name, request, tmp_path)
    try:
        with endpoint.open_sender() as sender:
            sender.send(Outbound("env-grows", endpoint.recipient, data=fake_envelope(b"s")))
        with endpoint.open_receiver(max_bytes=1024) as receiver:
            [delivery] = receiver.receive(1, timeout=5)
            assert not delivery.too_large  # by the size listed
            assert endpoint.folder is not None
            [claimed] = [p for p in (endpoint.folder / ".claimed").rglob("*") if p.is_file()]
            with claimed.open("ab") as grow:  # the partner keeps writing after the rename
                grow.write(b"G" * 4096)
            with pytest.raises(DeliveryTooLarge) as refused:
                delivery.read()
            assert refused.value.size == 1025  # one byte past the limit, then it stopped
            receiver.reject(delivery, refused.value.reason_code)
        assert endpoint.parked() == ["envelope-too-large"]
    finally:
        for step in endpoint.cleanup:
            step()


def test_a_delivery_exactly_at_the_limit_is_read_one_byte_more_is_refused() -> None:
    assert _delivery(b"x" * 10, max_bytes=10).read() == b"x" * 10
    # the announced size says 10, the stream holds 11: refused while reading
    with pytest.raises(DeliveryTooLarge):
        _delivery(b"x" * 11, max_bytes=10, size=10).read()
    with pytest.raises(DeliveryTooLarge):
        _delivery(b"x" * 11, max_bytes=10).open()  # known before reading: never opened
    assert _delivery(b"x" * 11, max_bytes=None).read() == b"x" * 11  # no limit


def test_chunked_reads_offsets_and_seeks_count_from_the_envelope_start() -> None:
    # a spool file's header line comes before the envelope (the HTTPS inbox)
    data = b"HEADER\n" + b"0123456789"
    with _delivery(data, max_bytes=10, skip=7).open() as stream:
        assert stream.read(4) == b"0123"
        assert stream.tell() == 4
        stream.seek(0)
        assert stream.read() == b"0123456789"
    with _delivery(data + b"!", max_bytes=10, skip=7, size=10).open() as stream, \
            pytest.raises(DeliveryTooLarge):
        while stream.read(3):
            pass


def test_spool_keeps_small_envelopes_in_memory_and_large_ones_in_a_file(
        tmp_path: Path) -> None:
    small = _delivery(b"s" * 100, max_bytes=None)
    with small.spool(tmp_path, in_memory=1000) as spooled:
        assert spooled.read() == b"s" * 100
        assert not spooled._rolled  # type: ignore[attr-defined]
    large = _delivery(b"L" * 5000, max_bytes=None)
    with large.spool(tmp_path, in_memory=1000) as spooled:
        assert spooled._rolled  # type: ignore[attr-defined]
        assert spooled.read() == b"L" * 5000
    with pytest.raises(DeliveryTooLarge):
        _delivery(b"L" * 5000, max_bytes=4000, size=100).spool(tmp_path, in_memory=1000)
    assert list(tmp_path.iterdir()) == []  # anonymous files, gone when closed


def test_spooling_a_large_delivery_holds_a_chunk_not_the_envelope(tmp_path: Path) -> None:
    source = tmp_path / "big.env"
    with source.open("wb") as out:
        for _ in range(64):
            out.write(b"B" * (1 << 20))
    delivery = Delivery(delivery_id="d-big", envelope_id=None, size=64 << 20, peer=None,
                        transport="test", opener=lambda: source.open("rb"),
                        max_bytes=DEFAULT_MAX_BYTES)
    tracemalloc.start()
    try:
        with delivery.spool(tmp_path) as spooled:
            spooled.seek(0, io.SEEK_END)
            assert spooled.tell() == 64 << 20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"held {peak >> 20} MiB to spool 64 MiB"


def test_max_bytes_is_a_url_option_of_every_inbound_transport(tmp_path: Path) -> None:
    with connect(f"file://{tmp_path / 'drop'}?max_bytes=4096") as drop:
        assert drop.box.settings.max_bytes == 4096  # type: ignore[attr-defined]
    with connect("memory://limits?max_bytes=5") as memory:
        assert memory.max_bytes == 5  # type: ignore[attr-defined]
    with connect("kombu+memory://?max_bytes=6&inbox=x") as kombu:
        assert kombu.max_bytes == 6  # type: ignore[attr-defined]
    with connect(f"file://{tmp_path / 'drop'}") as default:
        assert default.box.settings.max_bytes == DEFAULT_MAX_BYTES  # type: ignore[attr-defined]
    with pytest.raises(TransportConfigError) as bad:
        connect(f"file://{tmp_path / 'drop'}?max_bytes=lots")
    assert bad.value.option == "max_bytes"


def test_reading_a_delivery_longer_than_announced_holds_it_about_once() -> None:
    """A stream longer than its announced size (a grown file, a sender's wrong claim-check
    size) is gathered in one growing buffer, not in chunks joined at the end (two or three
    copies at once)."""
    stream_bytes = 32 << 20
    data = b"G" * stream_bytes
    delivery = _delivery(data, max_bytes=DEFAULT_MAX_BYTES, size=10)
    tracemalloc.start()
    try:
        read = delivery.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == data
    del read
    assert peak < stream_bytes * 3 // 2, f"held {peak >> 20} MiB to read {stream_bytes >> 20} MiB"
