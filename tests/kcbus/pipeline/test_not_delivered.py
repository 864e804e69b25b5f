"""The Rückweisung a sender gets when its message cannot be delivered (``delivery-failed``)
names only destinations the sender addressed itself (its header's readers): a copy the route
adds (an archive, a supervisory office) is "a further destination", without its partner ID,
name or address. A destination that had the message before an operator's resend gets no
Rückweisung when the repeat fails: the sender was told it was delivered, and it was; nor does a
repeat that succeeds send a second Zustellbestätigung."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from adapters.transport import DeliveryRefused, Outbound, Transport
from kcbus.ledger import DeliveryStatus, MessageFilter, Status
from kcbus.pipeline import DELIVERY_FAILED
from kcbus.receipts import ReceiptType
from tests.kcbus.world import World, Wrapped, outage, xbau_antrag


class Refuses(Wrapped):
    """A partner's real (in-memory) transport whose peer refuses every envelope for good
    while ``refusing`` is set."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.refusing = True

    def send(self, item: Outbound) -> None:
        if self.refusing:
            raise DeliveryRefused(
                "403 from the archive's endpoint",
                transport="memory",
                endpoint="archive.example",
                status=403,
            )
        self.inner.send(item)


def _refusing(world: World, partner: str) -> Refuses:
    refuses = Refuses(world.bus.runtime.transport(partner))
    world.bus.runtime.transports[partner] = refuses  # type: ignore[assignment]
    return refuses


def _fan_out_to(world: World, partner: str) -> None:
    """Route ``bauantrag`` to the header's readers and, as a copy, to ``partner``."""
    config = world.bus.runtime.config
    routes = dict(config.routes)
    routes["bauantrag"] = replace(routes["bauantrag"], to=("leser", partner))
    world.bus.runtime.config = replace(config, routes=routes)


def _message(world: World) -> str:
    world.send("gemeinde-a", xbau_antrag())
    world.bus.drain()
    (row,) = world.bus.ledger.search(MessageFilter(route="bauantrag", sender="gemeinde-a"))
    return row.ref


def test_a_failed_fan_out_copy_is_not_named_to_the_sender(world: World) -> None:
    _fan_out_to(world, "klinikum")  # stands in for an archive the sender knows nothing of
    _refusing(world, "klinikum")
    ref = _message(world)
    assert world.bus.ledger.get(ref).status is Status.DEAD
    deliveries = {d.destination: d.status for d in world.bus.ledger.history(ref).deliveries}
    assert deliveries == {"lra": DeliveryStatus.DELIVERED, "klinikum": DeliveryStatus.DEAD}
    delivered, _ = world.collect("lra")
    assert len(delivered) == 1

    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.REJECTED]
    (fault,) = receipts[1].faults
    assert fault.reason_code == DELIVERY_FAILED
    assert fault.text == "not delivered to a further destination"
    klinikum = world.config.partners["klinikum"]
    assert klinikum.address is not None
    for secret in ("klinikum", klinikum.name, klinikum.address.kennung, "archive.example"):
        assert secret.lower() not in fault.text.lower()


def test_a_failed_addressed_reader_is_named(world: World) -> None:
    _fan_out_to(world, "klinikum")
    _refusing(world, "lra")  # the reader the Bauantrag's header names
    ref = _message(world)
    assert world.bus.ledger.get(ref).status is Status.DEAD
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.REJECTED]
    (fault,) = receipts[1].faults
    assert fault.text == f"not delivered to lra: {DeliveryRefused.reason_code}"


def test_a_failed_resend_of_a_delivered_message_sends_no_rueckweisung(world: World) -> None:
    ref = _message(world)
    assert world.bus.ledger.get(ref).status is Status.ACKNOWLEDGED
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.DELIVERED]

    _refusing(world, "lra")  # the operator resends; this time the district office refuses
    world.now += timedelta(minutes=1)
    outcome = world.bus.ledger.resend([ref], actor="oncall", reason="lra lost it", now=world.now)
    assert [m.ref for m in outcome.acted] == [ref]
    world.bus.drain()
    row = world.bus.ledger.get(ref)
    assert row.status is Status.DEAD  # the operator sees the failed repeat...
    assert row.reason_code == DeliveryRefused.reason_code
    _, receipts = world.collect("gemeinde-a")
    assert receipts == []  # ...the sender, told "delivered" before, is not told otherwise


def test_the_zustellbestaetigung_names_only_addressed_destinations(world: World) -> None:
    _fan_out_to(world, "klinikum")  # a copy the sender knows nothing of
    ref = _message(world)
    assert world.bus.ledger.get(ref).status is Status.ACKNOWLEDGED
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.DELIVERED]
    handovers = receipts[1].handovers
    assert [h.recipient for h in handovers] == ["lra", "a further destination"]
    assert handovers[0].envelope_id and handovers[1].envelope_id is None
    copy = next(d for d in world.bus.ledger.history(ref).deliveries if d.destination == "klinikum")
    assert copy.envelope_id and copy.envelope_id not in repr(receipts[1])


def test_several_failed_copies_are_one_fault_without_their_codes(world: World) -> None:
    config = world.bus.runtime.config
    routes = dict(config.routes)
    routes["bauantrag"] = replace(routes["bauantrag"], to=("leser", "klinikum", "praxis"))
    world.bus.runtime.config = replace(config, routes=routes)
    _refusing(world, "klinikum")
    _refusing(world, "praxis")
    ref = _message(world)
    assert world.bus.ledger.get(ref).status is Status.DEAD
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.REJECTED]
    (fault,) = receipts[1].faults  # not one per hidden destination: that would count them
    assert fault.text == "not delivered to a further destination"


def test_a_successful_resend_sends_no_second_zustellbestaetigung(world: World) -> None:
    ref = _message(world)
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.DELIVERED]

    world.now += timedelta(minutes=1)
    world.bus.ledger.resend([ref], actor="oncall", reason="lra lost it", now=world.now)
    world.bus.drain()
    delivered, _ = world.collect("lra")
    assert len(delivered) == 2  # the district office got it again...
    _, receipts = world.collect("gemeinde-a")
    assert receipts == []  # ...the sender, told "delivered" before, hears nothing new
    history = world.bus.ledger.history(ref)
    assert history.message.status is Status.ACKNOWLEDGED
    assert [e.detail for e in history.events if e.stage == "acknowledge"][-1] == (
        "the sender has its Zustellbestätigung from before the resend"
    )


def test_a_resend_after_a_rueckweisung_confirms_the_delivery(world: World) -> None:
    refuses = _refusing(world, "lra")
    ref = _message(world)
    assert world.bus.ledger.get(ref).status is Status.DEAD
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.ACCEPTED, ReceiptType.REJECTED]

    refuses.refusing = False
    world.now += timedelta(minutes=1)
    world.bus.ledger.resend([ref], actor="oncall", reason="lra fixed", now=world.now)
    world.bus.drain()
    _, receipts = world.collect("gemeinde-a")
    assert [r.type for r in receipts] == [ReceiptType.DELIVERED]  # this one is news
    assert world.bus.ledger.get(ref).status is Status.ACKNOWLEDGED


def test_a_resend_while_the_first_zustellbestaetigung_still_retries(world: World) -> None:
    """The resend leaves the first confirmation to finish; once it arrives, the message is
    ACKNOWLEDGED, and the sender got one Zustellbestätigung."""
    down = outage(world, "gemeinde-a", failures=2)
    ref = _message(world)
    assert world.bus.ledger.get(ref).status is Status.DELIVERED  # its receipts wait

    world.now += timedelta(seconds=1)
    world.bus.ledger.resend([ref], actor="oncall", reason="lra lost it", now=world.now)
    world.bus.drain()
    history = world.bus.ledger.history(ref)
    assert history.message.status is Status.DELIVERED
    assert [e.detail for e in history.events if e.stage == "acknowledge"][-1] == (
        "the sender's Zustellbestätigung from before the resend is on its way"
    )

    for _ in range(5):  # the receipts' backoff passes; the link is back
        world.now += timedelta(minutes=10)
        world.bus.drain()
    assert down.failures == 0
    assert world.bus.ledger.get(ref).status is Status.ACKNOWLEDGED
    _, receipts = world.collect("gemeinde-a")
    assert sorted(r.type for r in receipts) == sorted(
        [ReceiptType.ACCEPTED, ReceiptType.DELIVERED]
    )
