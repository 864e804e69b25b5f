"""A Bauantrag with hundreds of MB of building plans goes receive → open → validate → route →
seal → deliver in constant memory (tracemalloc: peak Python allocations), and the recipient
opens it with the attachment digest intact; the same for end-to-end content (forwarded
unread) and on PostgreSQL."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

import xoev
from adapters.envelope import RoutingLabel, open_envelope, seal
from adapters.transport import Outbound, connect
from kcbus.ledger import MessageFilter, Status
from kcbus.ledger._tables import blob_chunks
from tests.kcbus.world import (
    BUS,
    Keys,
    World,
    entlassbrief,
    make_world,
    plans_file,
    xbau_antrag,
)

MiB = 1 << 20
#: Peak Python allocations allowed while the bus handles one large envelope.
PEAK = 48 * MiB


def _measured(run: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def _through_the_bus(
    world: World,
    tmp_path: Path,
    sender: str,
    recipient: str,
    message: bytes,
    size: int,
    *,
    end_to_end: bool,
) -> None:
    plans = tmp_path / "bauplaene.pdf"
    plans_digest = plans_file(plans, size)
    label = None
    if end_to_end:
        label = RoutingLabel.from_header(xoev.read_header(xoev.parse_xml(message)))
    sealed = seal(
        message,
        sender=sender,
        recipient=recipient if end_to_end else BUS,
        keystore=world.keystores[sender],
        now=world.now,
        attachments=[plans],
        via=BUS if end_to_end else None,
        label=label,
    )
    envelope = tmp_path / "antrag.env"
    sealed.save(envelope)
    plans.unlink()
    world.outbox(sender).send(Outbound.from_file(sealed.envelope_id, BUS, envelope))
    envelope.unlink()
    world.bus.runtime.scratch = tmp_path / "scratch"

    counts, peak = _measured(world.bus.drain)

    assert peak < PEAK, f"held {peak // MiB} MiB at once for a {size // MiB} MiB envelope"
    (row,) = world.bus.ledger.search(MessageFilter(uuid=None, sender=sender))
    assert row.status is Status.ACKNOWLEDGED, (row.status, row.reason_code, row.reason, counts)
    with world.bus.ledger._engine.connect() as conn:  # stored in chunks, not one row
        assert conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one() > 0
    assert list((tmp_path / "scratch").iterdir()) == []  # nothing left behind in scratch

    inbox = connect(f"file://{tmp_path / 'out'}")
    try:
        (delivery,) = inbox.receive(10)
        with delivery.open() as stream:
            opened = open_envelope(
                stream,
                keystore=world.keystores[recipient],
                now=world.now,
                replay_guard=None,
                attachments_dir=tmp_path / "opened",
            )
        inbox.acknowledge(delivery)
    finally:
        inbox.close()
    assert opened.sender == (sender if end_to_end else BUS)
    (attachment,) = opened.attachments
    assert attachment.entry.sha256 == plans_digest
    assert attachment.path.stat().st_size == size


def test_a_200_mib_bauantrag_goes_through_the_bus_in_constant_memory(
    tmp_path: Path, keys: Keys
) -> None:
    world = make_world(tmp_path / "w", keys, lra=f"file://{tmp_path / 'out'}")
    try:
        _through_the_bus(
            world, tmp_path, "gemeinde-a", "lra", xbau_antrag(), 200 * MiB, end_to_end=False
        )
    finally:
        world.close()


def test_large_end_to_end_content_is_forwarded_in_constant_memory(
    tmp_path: Path, keys: Keys
) -> None:
    world = make_world(tmp_path / "w", keys)
    # the Hausarzt's deliver_to: a file drop we read ourselves
    object.__setattr__(world.config.partners["praxis"], "deliver_to", f"file://{tmp_path / 'out'}")
    try:
        _through_the_bus(
            world, tmp_path, "klinikum", "praxis", entlassbrief(), 64 * MiB, end_to_end=True
        )
    finally:
        world.close()


@pytest.mark.real
def test_a_large_bauantrag_goes_through_the_bus_on_postgres(
    tmp_path: Path, keys: Keys, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KCBUS_LEDGER_KEYS", str(tmp_path / "ledger.keys"))
    world = make_world(tmp_path / "w", keys, postgres_url, lra=f"file://{tmp_path / 'out'}")
    try:
        _through_the_bus(
            world, tmp_path, "gemeinde-a", "lra", xbau_antrag(), 64 * MiB, end_to_end=False
        )
    finally:
        world.close()
