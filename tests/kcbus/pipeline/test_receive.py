"""Stage receive: a delivery that cannot be read as a plain file (a partner swapped it for a
symlink after listing) or is above the transport's ``max_bytes`` (before or while it is read)
is parked in the transport's failed place; the rest of the batch goes into the ledger and
nothing else is held back. Large envelopes go through a scratch file, not memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import cast

from adapters.envelope import peek_envelope
from adapters.transport import Delivery, Outbound, Transport, connect
from kcbus.ledger import MessageFilter
from kcbus.pipeline._receive import SPOOL_ABOVE, receive_batch
from tests.kcbus.world import BUS, World, Wrapped, bauantrag_with_plans, sha256_of, xbau_antrag


class SwapsOneForASymlink(Wrapped):
    """A drop folder whose partner wins the race once: right after the bus claimed its
    files, one of them is replaced by a symlink to a local secret."""

    def __init__(self, inner: Transport, folder: Path, secret: Path) -> None:
        super().__init__(inner)
        self.folder, self.secret = folder, secret

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        got = self.inner.receive(max_items, timeout)
        victim = next(p for p in sorted((self.folder / ".claimed").rglob("*")) if p.is_file())
        victim.unlink()
        victim.symlink_to(self.secret)
        return got


def test_an_unreadable_delivery_is_parked_and_the_batch_goes_on(
    world: World, tmp_path: Path
) -> None:
    secret = tmp_path / "bus-ledger.key"
    secret.write_bytes(b"SECRET KEY BYTES")
    folder = tmp_path / "inbox"
    drop = connect(f"file://{folder}")
    for n in range(2):
        _, data = world.seal("gemeinde-a", xbau_antrag())
        drop.send(Outbound(envelope_id=f"antrag-{n}", recipient=BUS, data=data))
    try:
        received = world.bus.receive_batch(
            cast(Transport, SwapsOneForASymlink(drop, folder, secret)), 10
        )
    finally:
        drop.close()
    assert received == 1
    assert len(world.bus.ledger.search(MessageFilter())) == 1
    # the refused one waits for an operator in failed/, with its reason; the secret was not read
    failed = [p for p in folder.rglob("*") if ".failed" in p.parts or "failed" in p.parts]
    assert any(p.name.endswith(".reason") for p in failed), sorted(map(str, failed))
    assert secret.read_bytes() == b"SECRET KEY BYTES"


# -- size limits and large envelopes --------------------------------------------------------


def test_a_delivery_above_max_bytes_is_parked_unread_counted_and_the_batch_goes_on(
    world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "inbox"
    with connect(f"file://{folder}?max_bytes=65536") as drop:
        _, data = world.seal("gemeinde-a", xbau_antrag())
        drop.send(Outbound(envelope_id="antrag-klein", recipient=BUS, data=data))
        (folder / "riesig.env").write_bytes(b"\0" * 100_000)  # a partner's oversized drop
        counts = receive_batch(world.bus.runtime, drop, 10)
    assert (counts.received, counts.rejected) == (1, 1)
    assert [r.envelope_id for r in world.bus.ledger.search(MessageFilter())] == [
        peek_envelope(data).envelope_id
    ]
    assert (folder / ".failed" / "riesig.env.reason").read_text() == "envelope-too-large\n"
    assert (folder / ".failed" / "riesig.env").stat().st_size == 100_000  # nothing lost


def test_a_drop_that_grows_beyond_max_bytes_while_it_is_read_is_parked(
    world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "inbox"
    (folder).mkdir()
    (folder / "waechst.env").write_bytes(b"\0" * 1000)

    class GrowsAfterListing(Wrapped):
        def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
            got = self.inner.receive(max_items, timeout)
            for claimed in (folder / ".claimed").rglob("waechst.env"):
                with claimed.open("ab") as grow:
                    grow.write(b"\0" * 100_000)
            return got

    with connect(f"file://{folder}?max_bytes=65536") as drop:
        counts = receive_batch(world.bus.runtime, cast(Transport, GrowsAfterListing(drop)), 10)
    assert (counts.received, counts.rejected) == (0, 1)
    assert (folder / ".failed" / "waechst.env.reason").read_text() == "envelope-too-large\n"


def test_a_large_envelope_goes_through_scratch_into_the_ledger(
    world: World, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    world.bus.runtime.scratch = scratch
    folder = tmp_path / "inbox"
    envelope_id, path = bauantrag_with_plans(world, folder, 2 * SPOOL_ABOVE)
    size = path.stat().st_size
    _, small = world.seal("gemeinde-a", xbau_antrag())
    (folder / "klein.env").write_bytes(small)
    with connect(f"file://{folder}") as drop:
        counts = receive_batch(world.bus.runtime, drop, 10)
    assert counts.received == 2
    rows = {r.envelope_id: r for r in world.bus.ledger.search(MessageFilter())}
    assert rows[envelope_id].size == size  # the envelope ID was peeked from the spool file
    assert list(scratch.iterdir()) == []  # spool files are anonymous and gone
    assert world.bus.process_pending().opened == 2  # the stored bytes are the envelope


def test_receiving_a_200_mb_drop_holds_chunks_not_the_envelope(
    world: World, tmp_path: Path
) -> None:
    """Transport + receive stage + ledger: the spool is hashed and stored in encrypted chunks,
    never held whole."""
    folder = tmp_path / "inbox"
    _, path = bauantrag_with_plans(world, folder, 200 << 20)
    expected = sha256_of(path)
    size = path.stat().st_size
    world.bus.runtime.scratch = tmp_path / "scratch"
    with connect(f"file://{folder}") as drop:
        tracemalloc.start()
        try:
            counts = receive_batch(world.bus.runtime, drop, 10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert counts.received == 1
    assert peak < 32 << 20, f"held {peak >> 20} MiB at once for a 200 MB drop"
    (row,) = world.bus.ledger.search(MessageFilter())
    assert row.size == size
    with world.bus.ledger.unit(actor="test", now=world.now) as unit, unit.open_blob(
        row.ledger_id, "envelope"
    ) as stored:
        assert sha256_of(stored) == expected
