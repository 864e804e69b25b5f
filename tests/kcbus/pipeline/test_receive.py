"""Stage receive: one delivery that cannot be read as a plain file (a partner swapped it for a
symlink after listing) is parked in the transport's failed place; the rest of the batch goes
into the ledger and nothing else is held back."""

from __future__ import annotations

from pathlib import Path

from adapters.transport import Delivery, Outbound, Transport, connect
from kcbus.ledger import MessageFilter
from tests.kcbus.world import BUS, World, xbau_antrag


class SwapsOneForASymlink:
    """A drop folder whose partner wins the race once: right after the bus claimed its
    files, one of them is replaced by a symlink to a local secret."""

    def __init__(self, inner: Transport, folder: Path, secret: Path) -> None:
        self.inner, self.folder, self.secret = inner, folder, secret

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

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
        received = world.bus.receive_batch(SwapsOneForASymlink(drop, folder, secret), 10)
    finally:
        drop.close()
    assert received == 1
    assert len(world.bus.ledger.search(MessageFilter())) == 1
    # the refused one waits for an operator in failed/, with its reason; the secret was not read
    failed = [p for p in folder.rglob("*") if ".failed" in p.parts or "failed" in p.parts]
    assert any(p.name.endswith(".reason") for p in failed), sorted(map(str, failed))
    assert secret.read_bytes() == b"SECRET KEY BYTES"
