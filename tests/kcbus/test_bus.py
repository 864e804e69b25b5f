"""End to end through the runtime with in-memory transports: three partners and the bus, a
full-inspection route (XBau) and an end-to-end route (CDA Entlassbrief), valid and invalid
messages. Every message ends DELIVERED + ACKNOWLEDGED, or REJECTED/DUPLICATE with a
Rückweisung back to its sender; the ledger history shows each step."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.envelope import WrongRecipient, open_envelope
from adapters.transport import Outbound
from kcbus._errors import LedgerError
from kcbus.ledger import Kind, MessageFilter, Status
from kcbus.receipts import ReceiptType
from tests.kcbus.world import World, entlassbrief, xbau_antrag, xjustiz


def test_valid_messages_are_delivered_and_acknowledged(world: World) -> None:
    antrag = xbau_antrag()
    brief = entlassbrief()
    world.send("gemeinde-a", antrag)
    world.send("klinikum", brief, end_to_end_for="praxis")

    counts = world.bus.drain()
    assert counts.received == 2 and counts.delivered >= 2

    lra_messages, _ = world.collect("lra")
    praxis_messages, _ = world.collect("praxis")
    assert lra_messages == [antrag]
    assert praxis_messages == [brief]

    _, gemeinde_receipts = world.collect("gemeinde-a")
    _, klinikum_receipts = world.collect("klinikum")
    for receipts in (gemeinde_receipts, klinikum_receipts):
        assert sorted(r.type for r in receipts) == [ReceiptType.ACCEPTED, ReceiptType.DELIVERED]

    messages = world.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE))
    assert {m.status for m in messages} == {Status.ACKNOWLEDGED}
    history = world.bus.ledger.history(messages[-1].ref)
    stages = [e.stage for e in history.events]
    for stage in ("receive", "open", "validate", "route", "seal", "deliver", "acknowledge"):
        assert stage in stages
    assert [e.status for e in history.events if e.status and e.delivery_id is None] == [
        "RECEIVED", "OPENED", "VALIDATED", "ROUTED", "DELIVERED", "ACKNOWLEDGED",
    ]


def test_end_to_end_content_stays_unreadable_for_the_bus(world: World) -> None:
    world.send("klinikum", entlassbrief(), end_to_end_for="praxis")
    world.bus.drain()
    (message,) = world.bus.ledger.search(MessageFilter(route="entlassbrief", kind=Kind.MESSAGE))
    assert message.inspection == "end-to-end" and message.status is Status.ACKNOWLEDGED
    history = world.bus.ledger.history(message.ref)
    assert not history.content_available
    with pytest.raises(LedgerError, match="end-to-end"):
        world.bus.ledger.content(message.ref, actor="op", reason="look", now=world.now)
    # What the bus holds for this message is sealed for the practice, not for the bus.
    with world.bus.ledger.unit(actor="t", now=world.now) as unit:
        stored = unit.blobs("content", [message.ledger_id])[message.ledger_id]
    with pytest.raises(WrongRecipient):
        open_envelope(stored, keystore=world.bus.runtime.keystore, now=world.now,
                      replay_guard=None)


def _reasons(world: World, partner: str) -> dict[str | None, str]:
    _, receipts = world.collect(partner)
    return {
        r.reference.message_uuid or r.reference.envelope_id: r.faults[0].reason_code
        for r in receipts
        if r.type is ReceiptType.REJECTED
    }


def test_rejections_carry_reason_codes_back_to_the_sender(world: World) -> None:
    import uuid

    invalid = xbau_antrag(drop="xbau:referenzAntragsservice")
    test_msg = xbau_antrag(test=True)
    unknown_reader = xbau_antrag(reader="bau:000000000000")
    first_uuid = str(uuid.uuid4())
    world.send("gemeinde-a", xbau_antrag(message_uuid=first_uuid))
    world.send("gemeinde-a", invalid)
    world.send("gemeinde-a", test_msg)
    world.send("gemeinde-a", unknown_reader)
    world.send("gemeinde-a", xjustiz())
    tampered = world.send("gemeinde-a", xbau_antrag(), tamper=True)
    world.bus.drain()
    world.send("gemeinde-a", xbau_antrag(message_uuid=first_uuid))  # same UUID, new envelope
    world.bus.drain()

    reasons = _reasons(world, "gemeinde-a")
    assert sorted(reasons.values()) == sorted([
        "schema-invalid", "test-to-production", "unknown-reader", "type-not-allowed",
        "envelope-tampered", "duplicate",
    ])
    assert reasons[tampered] == "envelope-tampered"

    ledger = world.bus.ledger
    rejected = ledger.search(MessageFilter(status=(Status.REJECTED,)))
    assert len(rejected) == 5
    dup = ledger.search(MessageFilter(status=(Status.DUPLICATE,)))
    assert len(dup) == 1 and dup[0].uuid == first_uuid and dup[0].parent_id is not None
    assert ledger.get(first_uuid).status is Status.ACKNOWLEDGED  # the original, not the copy

    schema = next(m for m in rejected if m.reason_code == "schema-invalid")
    history = ledger.history(schema.ref)
    event = next(e for e in history.events if e.status == "REJECTED")
    assert event.stage == "validate" and "line" in (event.detail or "")
    (receipt,) = history.receipts
    assert receipt.receipt_type == "rejected" and receipt.status is Status.DELIVERED
    # The Rückweisung names the element that failed, with line and XPath.
    _, _ = world.collect("gemeinde-a")
    lra_messages, _ = world.collect("lra")
    assert len(lra_messages) == 1  # only the valid one reached the district office


def test_redelivered_envelope_is_stored_once(world: World) -> None:
    envelope_id, data = world.seal("gemeinde-a", xbau_antrag())
    outbox = world.outbox("gemeinde-a")
    inbox = world.bus.inbox(world.config.bus.inbound[0])
    outbox.send(Outbound(envelope_id=envelope_id, recipient="kcbus", data=data))
    assert world.bus.receive_batch(inbox) == 1
    # The partner never saw our acknowledgement and hands the same envelope over again.
    outbox.send(Outbound(envelope_id=envelope_id + "-again", recipient="kcbus", data=data))
    assert world.bus.receive_batch(inbox) == 0
    assert inbox.receive(10) == []  # acknowledged all the same: it does not come back
    world.bus.drain()
    (row,) = world.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE))
    assert row.envelope_id == envelope_id and row.status is Status.ACKNOWLEDGED
    lra_messages, _ = world.collect("lra")
    assert len(lra_messages) == 1


def test_replayed_envelope_id_with_other_bytes_is_refused(world: World) -> None:
    envelope_id = world.send("gemeinde-a", xbau_antrag())
    world.bus.drain()
    world.send("gemeinde-a", xbau_antrag(), envelope_id=envelope_id)  # same ID, new content
    world.bus.drain()
    reasons = _reasons(world, "gemeinde-a")
    assert list(reasons.values()) == ["envelope-replayed"]


def test_inboxes_take_the_bus_inbound_limit_unless_the_url_sets_its_own(
    world: World, tmp_path: Path
) -> None:
    from dataclasses import replace

    world.bus.config = replace(
        world.config, bus=replace(world.config.bus, max_inbound_bytes=65_536)
    )
    plain = world.bus.inbox(f"file://{tmp_path / 'a'}")
    own = world.bus.inbox(f"file://{tmp_path / 'b'}?max_bytes=100000")
    for folder in ("a", "b"):
        (tmp_path / folder / "gross.env").write_bytes(b"\0" * 80_000)
    assert world.bus.receive_batch(plain, 10) == 0  # above the bus's limit: parked unread
    assert (tmp_path / "a" / ".failed" / "gross.env.reason").read_text() == (
        "envelope-too-large\n"
    )
    world.bus.receive_batch(own, 10)  # its URL allows it: read (and stored as received)
    assert not (tmp_path / "b" / ".failed" / "gross.env.reason").exists()
