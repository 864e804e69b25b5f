"""Delivery retries: a recoverable transport error waits (exponential backoff with jitter) and
tries again until the route's attempts are spent, then DEAD with the last error; a permanent
error is DEAD at once. A DEAD message's sender gets a Rückweisung (``delivery-failed``) unless
it opted out of them. An operator's resend brings a DEAD message through once the recipient
is back. Whether to retry follows the error's type, never its text."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from adapters.transport import EnvelopeTooLarge, TransportUnavailable
from kcbus.cli import main
from kcbus.ledger import DeliveryStatus, MessageFilter, Status
from kcbus.pipeline import DELIVERY_FAILED
from kcbus.receipts import ReceiptType
from tests.kcbus.world import Keys, World, make_world, outage, xbau_antrag


def _message(world: World) -> str:
    world.send("gemeinde-a", xbau_antrag())
    world.bus.drain()
    (row,) = world.bus.ledger.search(MessageFilter(route="bauantrag", sender="gemeinde-a"))
    return row.ref


def test_transient_failures_back_off_then_deliver(world: World) -> None:
    outage(world, "lra", failures=2)  # route bauantrag: 3 attempts, backoff 10s, jitter 0.5
    ref = _message(world)
    row = world.bus.ledger.get(ref)
    assert row.status is Status.RETRYING and row.reason_code == TransportUnavailable.reason_code
    assert row.next_attempt_at is not None
    wait = row.next_attempt_at - world.now
    assert timedelta(seconds=5) <= wait <= timedelta(seconds=10)

    world.bus.drain()  # not due yet: nothing happens
    assert world.bus.ledger.get(ref).attempts == 1
    world.now += timedelta(seconds=11)
    world.bus.drain()
    row = world.bus.ledger.get(ref)
    assert row.status is Status.RETRYING and row.attempts == 2
    assert row.next_attempt_at is not None
    assert timedelta(seconds=10) <= row.next_attempt_at - world.now <= timedelta(seconds=20)

    world.now += timedelta(seconds=21)
    world.bus.drain()
    assert world.bus.ledger.get(ref).status is Status.ACKNOWLEDGED
    delivered, _ = world.collect("lra")
    assert len(delivered) == 1
    history = world.bus.ledger.history(ref)
    attempts = [e for e in history.events if e.stage == "deliver" and e.delivery_id]
    assert [e.status for e in attempts] == ["RETRYING", "RETRYING", "DELIVERED"]


def test_retries_spent_is_dead_and_resend_recovers(
    world: World, tmp_path: Path
) -> None:
    down = outage(world, "lra", failures=100)
    ref = _message(world)
    for _ in range(3):
        world.now += timedelta(minutes=2)
        world.bus.drain()
    row = world.bus.ledger.get(ref)
    assert row.status is Status.DEAD and row.attempts == 3
    assert row.reason_code == TransportUnavailable.reason_code
    assert "connection refused" in (row.reason or "")
    (delivery,) = world.bus.ledger.history(ref).deliveries
    assert delivery.status is DeliveryStatus.DEAD
    # No Zustellbestätigung: a Rückweisung says the message was not delivered, and to whom.
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.REJECTED]
    (fault,) = receipts[1].faults
    assert fault.reason_code == DELIVERY_FAILED == "delivery-failed"
    assert "lra" in fault.text and TransportUnavailable.reason_code in fault.text
    assert "connection refused" not in fault.text  # the transport's own text stays inside
    assert receipts[1].reference.message_uuid == ref

    down.failures = 0  # the district office is back
    url = world.bus.ledger.url
    assert main(["resend", "--status", "DEAD", "--route", "bauantrag", "--ledger", url,
                 "--reason", "lra back online", "--actor", "oncall"]) == 0
    world.bus.drain()
    assert world.bus.ledger.get(ref).status is Status.ACKNOWLEDGED
    delivered, _ = world.collect("lra")
    assert len(delivered) == 1


def test_permanent_error_is_dead_at_once(tmp_path: Path, keys: Keys) -> None:
    world = make_world(tmp_path, keys, lra="memory://{name}?max_size=100")
    try:
        ref = _message(world)
        row = world.bus.ledger.get(ref)
        assert row.status is Status.DEAD and row.attempts == 1
        assert row.reason_code == EnvelopeTooLarge.reason_code
    finally:
        world.close()


def test_dead_is_reported_once_and_only_to_senders_who_take_rejections(
    tmp_path: Path, keys: Keys
) -> None:
    world = make_world(tmp_path, keys, lra="memory://{name}?max_size=100")
    try:
        ref = _message(world)
        world.now += timedelta(minutes=5)
        world.bus.drain()  # nothing moves again: one Rückweisung, not one per pass
        assert world.bus.ledger.get(ref).status is Status.DEAD
        _, receipts = world.collect("gemeinde-a")
        assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.REJECTED]
        assert [f.reason_code for f in receipts[1].faults] == [DELIVERY_FAILED]
        assert EnvelopeTooLarge.reason_code in receipts[1].faults[0].text

        partners = dict(world.config.partners)  # the sender opts out of Rückweisungen
        partners["gemeinde-a"] = replace(
            partners["gemeinde-a"], receipts=frozenset({"accepted", "delivered"})
        )
        world.bus.runtime.config = replace(world.config, partners=partners)
        second = _message_again(world)
        assert world.bus.ledger.get(second).status is Status.DEAD
        _, receipts = world.collect("gemeinde-a")
        assert [r.type for r in receipts] == [ReceiptType.ACCEPTED]
    finally:
        world.close()


def _message_again(world: World) -> str:
    world.send("gemeinde-a", xbau_antrag())
    world.bus.drain()
    rows = world.bus.ledger.search(MessageFilter(route="bauantrag", sender="gemeinde-a"))
    return rows[0].ref  # newest first
