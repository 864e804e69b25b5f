"""Stage receive: whether a delivery is read into memory is decided from its *announced* size
(a drop file as listed, an AMQP claim's size as the sender gave it) — only the sender's word.
A delivery announced small whose stream is large is read into memory no further than the
spool threshold and goes on into a spool file: memory stays bounded, the ledger gets every
byte."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import cast

from adapters.transport import Delivery, Transport, connect
from kcbus.ledger import MessageFilter
from kcbus.pipeline._receive import SPOOL_ABOVE, receive_batch
from tests.kcbus.world import World, Wrapped, bauantrag_with_plans, sha256_of, xbau_antrag


class ListedSmallThenSwapped(Wrapped):
    """A drop folder whose file is listed at a few bytes and is a large envelope by the time
    it is read (it grew, or a claim-check's announced size was wrong)."""

    def __init__(self, inner: Transport, folder: Path, large: Path) -> None:
        super().__init__(inner)
        self.folder, self.large = folder, large

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        got = self.inner.receive(max_items, timeout)
        (claimed,) = (p for p in (self.folder / ".claimed").rglob("*.env") if p.is_file())
        os.replace(self.large, claimed)
        return got


def test_a_delivery_announced_small_but_large_is_spooled_not_held(
    world: World, tmp_path: Path
) -> None:
    stream_bytes = 6 * SPOOL_ABOVE  # 48 MiB behind an announced size of a few bytes
    envelope_id, large = bauantrag_with_plans(
        world, tmp_path / "made", stream_bytes, name="large.env"
    )
    size = large.stat().st_size
    expected = sha256_of(large)
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "antrag.env").write_bytes(b"small")
    world.bus.runtime.scratch = tmp_path / "scratch"
    with connect(f"file://{folder}") as drop:
        (listed,) = drop.receive(10)  # what the listing announces: 5 bytes
        assert listed.size == 5
        drop.release(listed)
        swapping = cast(Transport, ListedSmallThenSwapped(drop, folder, large))
        tracemalloc.start()
        try:
            counts = receive_batch(world.bus.runtime, swapping, 10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert counts.received == 1
    # Without the bound the whole stream was read into memory (twice: chunks, then joined).
    assert peak < 3 * SPOOL_ABOVE, f"held {peak >> 20} MiB at once for a {size >> 20} MiB stream"
    (row,) = world.bus.ledger.search(MessageFilter())
    assert row.size == size  # what was read, not what was announced
    assert row.envelope_id == envelope_id  # peeked from the spool file
    with (
        world.bus.ledger.unit(actor="test", now=world.now) as unit,
        unit.open_blob(row.ledger_id, "envelope") as stored,
    ):
        assert sha256_of(stored) == expected
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_delivery_announced_small_that_grows_a_little_stays_in_memory(
    world: World, tmp_path: Path
) -> None:
    """Longer than announced but below the threshold: read in memory, every byte kept."""
    _, data = world.seal("gemeinde-a", xbau_antrag())
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "antrag.env").write_bytes(data[:10])
    full = tmp_path / "full.env"
    full.write_bytes(data)
    world.bus.runtime.scratch = tmp_path / "scratch"
    with connect(f"file://{folder}") as drop:
        swapping = cast(Transport, ListedSmallThenSwapped(drop, folder, full))
        counts = receive_batch(world.bus.runtime, swapping, 10)
    assert counts.received == 1
    (row,) = world.bus.ledger.search(MessageFilter())
    assert row.size == len(data)
    assert world.bus.process_pending().opened == 1
    assert not (tmp_path / "scratch").exists() or list((tmp_path / "scratch").iterdir()) == []
